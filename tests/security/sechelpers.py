"""Helpers for the security tests: contexts, the system libsepol, a
create-label oracle built from setools.  No mocks: everything here reads
real policies compiled by secilc."""

import ctypes
import ctypes.util
import itertools
from pathlib import Path

from securecache.security import policybuild

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POLICY_DIR = REPO / "policy"
TEST_MODULE = POLICY_DIR / "test" / "securecache-test.cil"
CREATE_MODULE = HERE / "policy" / "create-rules.cil"
REFPOLICY = Path("/etc/selinux/default/policy/policy.33")

CACHE = "system_u:system_r:securecache_t:s0"
ADMIN = "system_u:system_r:securecache_admin_t:s0-s0:c0.c1023"
APP = "system_u:system_r:securecache_app_t:s0:c1"
APP2 = "system_u:system_r:securecache_app_t:s0:c2"
READONLY = "system_u:system_r:securecache_readonly_t:s0-s0:c0.c1023"
LOCAL = "system_u:system_r:securecache_local_t:s0"
TENANT = "system_u:system_r:sctest_tenant_t:s0"
PERMISSIVE = "system_u:system_r:sctest_permissive_t:s0"
UNLABELED = "system_u:object_r:unlabeled_t:s0"


def item(type_, level="s0"):
    """An item context of type `type_` at `level`."""
    return f"system_u:object_r:{type_}:{level}"


def read_lines(path):
    """The AVC lines written to an audit file so far."""
    return path.read_text().splitlines() if path.exists() else []


def build(tmp_path, *modules, name="policy.bin"):
    """Compile base + securecache + `modules` into tmp_path/name."""
    return policybuild.build_policy(list(modules), Path(tmp_path) / name)


# ---------------------------------------------------------------- contexts
def parse_level(text):
    """'s0:c1,c3.c5' -> ('s0', frozenset({1, 3, 4, 5}))."""
    sens, _, cats = text.partition(":")
    result = set()
    for part in filter(None, cats.split(",")):
        low, _, high = part.partition(".")
        result.update(range(int(low[1:]), int((high or low)[1:]) + 1))
    return sens, frozenset(result)


def parse_context(ctx):
    """'u:r:t:LOW[-HIGH]' -> (u, r, t, (low, high)) with parsed levels."""
    user, role, type_, mls = ctx.split(":", 3)
    low, _, high = mls.partition("-")
    return user, role, type_, (parse_level(low), parse_level(high or low))


def format_level(level):
    """('s0', {1, 2, 3, 7}) -> 's0:c1.c3,c7' (runs of 3+ as ranges)."""
    sens, cats = level
    parts, run = [], []
    for cat in sorted(cats) + [None]:
        if run and (cat is None or cat != run[-1] + 1):
            if len(run) >= 3:
                parts.append(f"c{run[0]}.c{run[-1]}")
            else:
                parts += [f"c{c}" for c in run]
            run = []
        if cat is not None:
            run.append(cat)
    return sens + (":" + ",".join(parts) if parts else "")


def format_context(user, role, type_, rng):
    low, high = rng
    mls = format_level(low) + ("" if low == high else "-" + format_level(high))
    return f"{user}:{role}:{type_}:{mls}"


# ---------------------------------------------------------------- system libsepol
class SystemSepol:
    """libsepol.so.2's exported security server, straight through ctypes.

    One global policy per process: each instance reloads its policy when
    another instance loaded one since.
    """

    _lib = None
    _current = None

    def __init__(self, path):
        self.path = str(path)
        if SystemSepol._lib is None:
            SystemSepol._lib = self._open()
        self.lib = SystemSepol._lib
        self._sids = {}
        self._ensure()

    @staticmethod
    def _open():
        lib = ctypes.CDLL("libsepol.so.2")
        lib.sepol_debug(0)
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        lib.libc = libc
        lib.sepol_set_policydb_from_file.argtypes = [ctypes.c_void_p]
        lib.sepol_context_to_sid.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                             ctypes.POINTER(ctypes.c_uint32)]
        lib.sepol_string_to_security_class.argtypes = [ctypes.c_char_p,
                                                       ctypes.POINTER(ctypes.c_uint16)]
        lib.sepol_string_to_av_perm.argtypes = [ctypes.c_uint16, ctypes.c_char_p,
                                                ctypes.POINTER(ctypes.c_uint32)]
        lib.sepol_compute_av.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint16,
                                         ctypes.c_uint32, ctypes.c_void_p]
        return lib

    def _ensure(self):
        if SystemSepol._current is self:
            return
        fp = self.lib.libc.fopen(self.path.encode(), b"rb")
        assert fp, self.path
        try:
            assert self.lib.sepol_set_policydb_from_file(fp) == 0
        finally:
            self.lib.libc.fclose(fp)
        self._sids.clear()
        SystemSepol._current = self

    def sid(self, ctx):
        """SID of ctx, or None if invalid."""
        self._ensure()
        if ctx not in self._sids:
            out = ctypes.c_uint32()
            raw = ctx.encode()
            rc = self.lib.sepol_context_to_sid(raw, len(raw) + 1, ctypes.byref(out))
            self._sids[ctx] = out.value if rc == 0 else None
        return self._sids[ctx]

    def tclass(self, name):
        self._ensure()
        out = ctypes.c_uint16()
        assert self.lib.sepol_string_to_security_class(name.encode(), ctypes.byref(out)) == 0
        return out.value

    def perm(self, tclass, name):
        out = ctypes.c_uint32()
        assert self.lib.sepol_string_to_av_perm(self.tclass(tclass), name.encode(),
                                                ctypes.byref(out)) == 0
        return out.value

    def compute_av(self, scontext, tcontext, tclass):
        """(allowed, auditallow, auditdeny) as libsepol.so.2 computes them."""
        ssid, tsid = self.sid(scontext), self.sid(tcontext)
        assert ssid and tsid, (scontext, tcontext)
        avd = (ctypes.c_uint32 * 5)()
        assert self.lib.sepol_compute_av(ssid, tsid, self.tclass(tclass), 0, avd) == 0
        return avd[0], avd[2], avd[3]


# ---------------------------------------------------------------- create oracle
class CreateOracle:
    """The kernel's create computation, re-done from setools' view of a
    policy: type_transition (incl. name-based and enabled conditional
    rules), role_transition, range_transition and default_* statements.
    Validity of the result is asked of `validity` (a callable)."""

    def __init__(self, path, booleans=None):
        import setools
        policy = setools.SELinuxPolicy(str(path))
        self.process_like = {str(c) for c in policy.classes()
                             if str(c) == "process" or str(c) == "socket" or str(c).endswith("_socket")}
        self.types, self.names = {}, {}
        for rule in policy.terules():
            if rule.ruletype.name != "type_transition" or not _enabled(rule, booleans or {}):
                continue
            name = getattr(rule, "filename", None)
            for s, t in itertools.product(rule.source.expand(), rule.target.expand()):
                key = (str(s), str(t), str(rule.tclass))
                table = self.names if name else self.types
                table[key + ((name,) if name else ())] = str(rule.default)
        self.roles = {(str(r.source), str(t), str(r.tclass)): str(r.default)
                      for r in policy.rbacrules() if r.ruletype.name == "role_transition"
                      for t in r.target.expand()}
        self.ranges = {(str(s), str(t), str(r.tclass)): parse_context(f"u:r:t:{r.default}")[3]
                       for r in policy.mlsrules()
                       for s in r.source.expand() for t in r.target.expand()}
        self.defaults = {}
        for d in policy.defaults():
            kind = d.ruletype.name.replace("default_", "")
            value = str(d.default) + (f"_{d.default_range}" if kind == "range" and d.default_range else "")
            self.defaults[(str(d.tclass), kind)] = value

    def compute(self, scontext, tcontext, tclass, name=None):
        """The new context (formatted), before the validity check."""
        s, t = parse_context(scontext), parse_context(tcontext)
        proc = tclass in self.process_like
        pick = {"source": s, "target": t}
        user = pick.get(self.defaults.get((tclass, "user")), s)[0]
        role = self._default(tclass, "role", pick, 1, s[1] if proc else "object_r")
        type_ = self._default(tclass, "type", pick, 2, s[2] if proc else t[2])
        type_ = self.types.get((s[2], t[2], tclass), type_)
        if name is not None:
            type_ = self.names.get((s[2], t[2], tclass, name), type_)
        role = self.roles.get((s[1], t[2], tclass), role)
        rng = self._range(s, t, tclass, proc)
        return format_context(user, role, type_, rng)

    def _default(self, tclass, kind, pick, index, fallback):
        which = self.defaults.get((tclass, kind))
        return pick[which][index] if which in pick else fallback

    def _range(self, s, t, tclass, proc):
        if (s[2], t[2], tclass) in self.ranges:
            return self.ranges[(s[2], t[2], tclass)]
        (slo, shi), (tlo, thi) = s[3], t[3]
        rule = self.defaults.get((tclass, "range"))
        table = {
            "source_low": (slo, slo), "source_high": (shi, shi), "source_low_high": (slo, shi),
            "target_low": (tlo, tlo), "target_high": (thi, thi), "target_low_high": (tlo, thi),
            "glblub": ((max(slo[0], tlo[0]), slo[1] & tlo[1]), (min(shi[0], thi[0]), shi[1] & thi[1])),
        }
        if rule in table:
            return table[rule]
        return (slo, shi) if proc else (slo, slo)


def _enabled(rule, booleans):
    cond = getattr(rule, "conditional", None)
    if cond is None:
        return True
    return cond.evaluate(**booleans) == rule.conditional_block
