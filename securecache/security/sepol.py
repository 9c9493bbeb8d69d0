"""The `policy` security server: a binary policy in userspace (libsepol).

How this works: the private libsepol (native.py) loads the bytes of a binary
policy file (built by secilc from policy/) into a policy handle of its own;
every call selects this server's handle first, under native.LOCK, so
several servers (tests, a reload in progress) can live in one process.
Access vectors come from libsepol's own sepol_compute_av -- the same code the
system's libsepol.so.2 runs, which decides TE rules, conditional rules,
RBAC and MLS/MCS constraints as the kernel does; create labels from
scs_compute_create, the kernel's create computation.  Booleans come from a
file of `name=true|false` lines and are set in the live policy, whose
conditional rules are then re-evaluated.

libsepol works on SIDs; its sepol_context_to_sid searches the SID table
linearly and never frees an entry, so this server numbers SIDs itself
(scs_sid_insert / scs_sid_remove): `_sids` maps context -> SID, least
recently used first, and holds at most MAX_SIDS; the least recently used
SID is freed and its number reused when a new context needs one.  A SID
is only a handle for one question (the AVC keeps decisions by context),
so freeing one changes no answer, costs no reload and flushes nothing:
however many distinct contexts clients and items carry, a new context costs
the same few microseconds.  Canonical spellings are computed without a SID.
Every reload invalidates every SID and flushes the AVC through the reload
listeners.  All libsepol calls hold native.LOCK.
"""

import ctypes
import errno
import hashlib
from collections import OrderedDict
from pathlib import Path

from . import native
from .servers import (
    HANDLE_ALLOW, HANDLE_DENY, HANDLE_REJECT, ALL_PERMS, AccessDecision,
    CreateLabelError, InvalidContextError, PolicyLoadError, SecurityServer,
    context_syntax_ok, require_context_syntax,
)

HANDLE_UNKNOWN = {0: HANDLE_DENY, 2: HANDLE_REJECT, 4: HANDLE_ALLOW}
UNLABELED_ISID = 3           # the kernel's number for the `unlabeled` SID
MAX_SIDS = 8192              # SIDs held at once (least recently used freed)
FIRST_SID = 1 << 30          # our SIDs' range: far above libsepol's own
                             # allocator's and the initial SIDs' numbers
MAX_MEMO = 50000             # bound of the validity / canonical memos (oldest out)
BOOL_VALUES = {"true": True, "false": False}


class BooleansError(PolicyLoadError):
    """A booleans file is malformed or names an unknown boolean."""


def parse_booleans(text, source="<booleans>"):
    """Parse `name=true|false` lines (`#` comments, blank lines allowed).

    Returns [(name, value, lineno)].  Raises BooleansError with the line
    number on a malformed line or a name given twice.
    """
    entries, seen = [], {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not name or value.lower() not in BOOL_VALUES:
            raise BooleansError(f"{source}:{lineno}: expected name=true|false, got {raw.strip()!r}")
        if name in seen:
            raise BooleansError(f"{source}:{lineno}: boolean {name} already set on line {seen[name]}")
        seen[name] = lineno
        entries.append((name, BOOL_VALUES[value.lower()], lineno))
    return entries


def _remember(memo, key, value):
    """Add to a bounded memo (an OrderedDict), dropping its oldest entry."""
    if len(memo) >= MAX_MEMO:
        memo.popitem(last=False)
    memo[key] = value


def _read(path, what):
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PolicyLoadError(f"cannot read {what} {path}: {exc.strerror}") from exc


class PolicyServer(SecurityServer):
    """A binary policy file (+ optional booleans file) loaded in userspace."""

    mode = "policy"

    def __init__(self, policy_path, booleans_path=None):
        super().__init__()
        self.policy_path = Path(policy_path)
        self.booleans_path = Path(booleans_path) if booleans_path else None
        self._lib = native.load()
        self._image = None          # (policy bytes, boolean entries) loaded
        self._handle = None         # the private libsepol's policy
        self.max_sids = MAX_SIDS    # SIDs held at once
        self.fingerprint = ""
        self._load()

    # ------------------------------------------------------------ loading
    def _load(self):
        data = _read(self.policy_path, "policy")
        text = _read(self.booleans_path, "booleans file") if self.booleans_path else b""
        entries = parse_booleans(text.decode("utf-8", "replace"), str(self.booleans_path))
        self._install(data, entries)     # on failure the old policy stays
        digest = hashlib.sha256(data)
        digest.update(repr([(n, v) for n, v, _ in entries]).encode())
        self.fingerprint = digest.hexdigest()

    def _install(self, data, entries):
        lib = self._lib
        with native.LOCK:
            err = ctypes.c_int()
            buf = ctypes.create_string_buffer(data, len(data))
            handle = lib.scs_open(buf, len(data), ctypes.byref(err))
            if not handle:
                raise PolicyLoadError(f"{self.policy_path}: not a binary policy libsepol can load")
            try:
                lib.scs_select(handle)
                self._set_booleans(entries)
                unlabeled = self._initial_context(UNLABELED_ISID)
            except PolicyLoadError:
                lib.scs_close(handle)
                self._select()
                raise
            old, self._handle = self._handle, handle
            lib.scs_close(old)
            self._reset_memos()
            self._handle_unknown = HANDLE_UNKNOWN.get(lib.scs_handle_unknown(), HANDLE_DENY)
            self._unlabeled = unlabeled
            self._image = (data, entries)

    def _select(self):
        """Make this server's policy libsepol's current one (under LOCK)."""
        self._lib.scs_select(self._handle)

    def close(self):
        """Free the policy; the server is unusable afterwards."""
        with native.LOCK:
            self._lib.scs_close(self._handle)
            self._handle = None

    def __del__(self):
        handle, self._handle = getattr(self, "_handle", None), None
        if handle and native.LOCK.acquire(blocking=False):
            try:
                self._lib.scs_close(handle)
            finally:
                native.LOCK.release()

    def _set_booleans(self, entries):
        for name, value, lineno in entries:
            if self._lib.scs_set_bool(name.encode(), int(value)) != 0:
                raise PolicyLoadError(
                    f"{self.booleans_path}:{lineno}: the policy has no boolean {name}")
        if self._lib.scs_commit_bools() != 0:
            raise PolicyLoadError("libsepol could not evaluate the conditional rules")

    def _reset_memos(self):
        self._sids = OrderedDict()     # context -> SID, least recently used first
        self._spare_sids = []
        self._next_sid = FIRST_SID
        self._classes = {}
        self._perms = {}
        self._valid = OrderedDict()
        self._canonical = OrderedDict()
        self._created = OrderedDict()   # (s, t, class) -> label, name-free

    def _initial_context(self, isid):
        out, size = ctypes.c_void_p(), ctypes.c_size_t()
        if self._lib.scs_initial_context(isid, ctypes.byref(out), ctypes.byref(size)) != 0:
            raise PolicyLoadError(f"{self.policy_path}: no initial SID {isid} (unlabeled)")
        return native.take_string(self._lib, out)

    # ------------------------------------------------------------ SIDs
    def _sid(self, ctx):
        sid = self._sids.get(ctx)
        if sid is None:
            return self._new_sid(ctx)
        self._sids.move_to_end(ctx)
        return sid

    def _new_sid(self, ctx):
        require_context_syntax(ctx)
        sid = self._take_sid()
        raw = ctx.encode("ascii")
        if self._lib.scs_sid_insert(raw, len(raw), sid) != 0:
            self._spare_sids.append(sid)
            raise InvalidContextError(f"invalid context under the loaded policy: {ctx}")
        self._sids[ctx] = sid
        return sid

    def _take_sid(self):
        """A free SID number: a spare one, a new one, or (at MAX_SIDS) the
        least recently used one, freed in libsepol first."""
        if len(self._sids) >= self.max_sids:
            _, sid = self._sids.popitem(last=False)
            self._lib.scs_sid_remove(sid)
            return sid
        if self._spare_sids:
            return self._spare_sids.pop()
        self._next_sid += 1
        return self._next_sid - 1

    def _sids_for(self, *contexts):
        return [self._sid(c) for c in contexts]

    # ------------------------------------------------------------ classes
    def _class(self, tclass):
        value = self._classes.get(tclass)
        if value is None:
            out = ctypes.c_uint16()
            rc = self._lib.sepol_string_to_security_class(tclass.encode(), ctypes.byref(out))
            value = self._classes[tclass] = out.value if rc == 0 else 0
        return value

    def class_known(self, tclass):
        with native.LOCK:
            self._select()
            return self._class(tclass) != 0

    def perm_bit(self, tclass, perm):
        key = (tclass, perm)
        if key not in self._perms:
            with native.LOCK:
                self._select()
                self._perms[key] = self._lookup_perm(tclass, perm)
        return self._perms[key]

    def _lookup_perm(self, tclass, perm):
        cls = self._class(tclass)
        if not cls:
            return None
        out = ctypes.c_uint32()
        rc = self._lib.sepol_string_to_av_perm(cls, perm.encode(), ctypes.byref(out))
        return out.value if rc == 0 and out.value else None

    # ------------------------------------------------------------ questions
    def compute_av(self, scontext, tcontext, tclass):
        with native.LOCK:
            self._select()
            cls = self._class(tclass)
            ssid, tsid = self._sids_for(scontext, tcontext)
            permissive = self._lib.scs_permissive(ssid) == 1
            if not cls:
                allowed = ALL_PERMS if self._handle_unknown == HANDLE_ALLOW else 0
                return AccessDecision(allowed, 0, ALL_PERMS, permissive)
            avd = native.AvDecision()
            if self._lib.sepol_compute_av(ssid, tsid, cls, 0, ctypes.byref(avd)) != 0:
                raise InvalidContextError(f"libsepol refused {scontext} -> {tcontext} ({tclass})")
            return AccessDecision(avd.allowed, avd.auditallow, avd.auditdeny, permissive)

    def compute_create(self, scontext, tcontext, tclass, name=None):
        """The kernel's create computation (see scs_compute_create). Where
        no name-based rule can apply to (source type, target type, class),
        the label is the same for every name: it is remembered, per
        (scontext, tcontext, tclass), until the policy is loaded again."""
        memo_key = (scontext, tcontext, tclass)
        created = self._created.get(memo_key)
        if created is not None:
            return created
        if isinstance(name, str):
            name = name.encode("utf-8")
        # a NUL (tested as an int: a one-byte bytes operand makes CPython
        # raise and clear a TypeError first) cannot pass as a C string
        if name is not None and (not name or 0 in name):
            name = None
        with native.LOCK:
            self._select()
            cls = self._class(tclass)
            if not cls:
                raise CreateLabelError(f"class {tclass} is not in the policy")
            ssid, tsid = self._sids_for(scontext, tcontext)
            out, size = ctypes.c_void_p(), ctypes.c_size_t()
            rc = self._lib.scs_compute_create(ssid, tsid, cls, name, ctypes.byref(out), ctypes.byref(size))
            if rc != 0:
                why = "is not a valid context" if rc == -errno.EACCES else f"failed ({rc})"
                raise CreateLabelError(
                    f"create label for {scontext} in {tcontext} ({tclass}) {why}")
            created = native.take_string(self._lib, out)
            if self._lib.scs_name_rules(ssid, tsid, cls) == 0:
                _remember(self._created, memo_key, created)
            return created

    def check_context(self, ctx):
        if ctx in self._sids:
            return True
        valid = self._valid.get(ctx)
        if valid is None:
            valid = context_syntax_ok(ctx) and self._check(ctx)
            _remember(self._valid, ctx, valid)
        return valid

    def _check(self, ctx):
        raw = ctx.encode("ascii")
        with native.LOCK:
            self._select()
            return self._lib.sepol_context_to_sid(raw, len(raw) + 1, None) == 0

    def canonical(self, ctx):
        canon = self._canonical.get(ctx)
        if canon is None:
            require_context_syntax(ctx)
            raw = ctx.encode("ascii")
            out, size = ctypes.c_void_p(), ctypes.c_size_t()
            with native.LOCK:
                self._select()
                if self._lib.scs_canonical(raw, len(raw), ctypes.byref(out), ctypes.byref(size)) != 0:
                    raise InvalidContextError(f"invalid context under the loaded policy: {ctx}")
                canon = native.take_string(self._lib, out)
            _remember(self._canonical, ctx, canon)
        return canon

    @property
    def unlabeled_context(self):
        return self._unlabeled

    @property
    def handle_unknown(self):
        return self._handle_unknown

    def booleans(self):
        """The policy's booleans and their current values, by name."""
        lib, result = self._lib, {}
        with native.LOCK:
            self._select()
            for index in range(max(lib.scs_bool_count(), 0)):
                name = lib.scs_bool_name(index)
                result[name.decode()] = lib.scs_get_bool(name) == 1
        return result

    def describe(self):
        extra = f", booleans {self.booleans_path}" if self.booleans_path else ""
        return f"policy {self.policy_path}{extra}"
