"""Security servers: one interface, three back ends.

How this works: a security server answers the questions the object manager
asks about labels, and nothing else (no caching, no auditing, no
enforcement -- that is avc.py's job, as in the kernel):

    compute_av(scontext, tcontext, tclass)      -> AccessDecision
    perm_bit(tclass, perm)                      -> int | None
    compute_create(scontext, tcontext, tclass, name) -> str
    check_context(ctx), canonical(ctx), unlabeled_context
    reload(), has_classes(), handle_unknown

Back ends: `policy` (sepol.py: a binary policy loaded in userspace through a
private libsepol), `kernel` (kernel.py: the host's SELinux through
libselinux) and `off` (off.py: allows everything, loudly).

Contexts are `str`.  A context is rejected before it reaches C code unless it
is printable ASCII without white space (see `context_syntax_ok`).
"""

import dataclasses

from . import classes

ALL_PERMS = 0xFFFFFFFF

# policy `handleunknown` values
HANDLE_DENY = "deny"
HANDLE_REJECT = "reject"
HANDLE_ALLOW = "allow"

MAX_CONTEXT_LEN = 4095


class SecurityError(Exception):
    """Base of every error of the security package."""


class InvalidContextError(SecurityError, ValueError):
    """A context is not valid under the loaded policy (or not a context)."""


class PolicyLoadError(SecurityError):
    """A policy, booleans file or native library could not be loaded."""


class MissingClassesError(SecurityError):
    """The loaded policy lacks securecache's classes or permissions."""


class CreateLabelError(SecurityError):
    """The create computation failed (e.g. its result is invalid)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AccessDecision:
    """An access vector for one (scontext, tcontext, tclass).

    allowed, auditallow, auditdeny: permission bitmasks (bits from the
    server's `perm_bit`).  permissive: the source domain is permissive
    (`typepermissive`), so its denials are logged and not enforced.
    """

    allowed: int
    auditallow: int
    auditdeny: int
    permissive: bool = False


def context_syntax_ok(ctx):
    """True if `ctx` looks like a context: USER:ROLE:TYPE[:LEVEL...].

    Syntax only: printable ASCII, no white space, at least three fields,
    bounded length.  Validity under a policy is `check_context`.
    """
    if not isinstance(ctx, str) or not 0 < len(ctx) <= MAX_CONTEXT_LEN:
        return False
    if not all("!" <= ch <= "~" for ch in ctx):
        return False
    fields = ctx.split(":")
    return len(fields) >= 3 and all(fields[:3])


def require_context_syntax(ctx):
    """Raise InvalidContextError unless `context_syntax_ok(ctx)`."""
    if not context_syntax_ok(ctx):
        raise InvalidContextError(f"not a security context: {ctx!r}")


class SecurityServer:
    """The common interface; see the module docstring.

    Subclasses set `mode` and implement the abstract methods.  `seqno`
    increases on every policy (re)load; listeners added with
    `add_reload_listener` are called after each reload (the AVC flushes).
    """

    mode = "abstract"
    needs_polling = False     # True: call poll() before using cached answers
    host_enforcing = True     # kernel mode: the host's enforcing state
    warning = ""              # non-empty: the daemon must print and show it

    def __init__(self):
        self.seqno = 0
        self._listeners = []

    # ------------------------------------------------------------ abstract
    def compute_av(self, scontext, tcontext, tclass):
        """The AccessDecision for scontext acting on tcontext in tclass.

        Raises InvalidContextError for an invalid context.  An unknown class
        gives everything or nothing, as the policy's handleunknown says.
        """
        raise NotImplementedError

    def perm_bit(self, tclass, perm):
        """The policy's bit for `perm` in `tclass`, or None if unknown."""
        raise NotImplementedError

    def compute_create(self, scontext, tcontext, tclass, name=None):
        """The context of a new `tclass` object created by scontext in
        tcontext, named `name` (bytes or None), as the kernel computes it.

        Raises InvalidContextError or CreateLabelError.
        """
        raise NotImplementedError

    def check_context(self, ctx):
        """True if `ctx` is a valid context under the loaded policy."""
        raise NotImplementedError

    def canonical(self, ctx):
        """The policy's canonical spelling of `ctx` (aliases resolved,
        category sets compressed).  Raises InvalidContextError."""
        raise NotImplementedError

    @property
    def unlabeled_context(self):
        """The context of the `unlabeled` initial SID."""
        raise NotImplementedError

    @property
    def handle_unknown(self):
        """HANDLE_DENY, HANDLE_REJECT or HANDLE_ALLOW."""
        raise NotImplementedError

    def _load(self):
        """(Re)load policy and booleans; called by reload()."""
        raise NotImplementedError

    # ------------------------------------------------------------ common
    @property
    def allows_unknown(self):
        """True if the policy lets unknown classes/permissions through."""
        return self.handle_unknown == HANDLE_ALLOW

    def class_known(self, tclass):
        """True if the loaded policy defines `tclass`."""
        return self.perm_bit(tclass, None) is not None

    def has_classes(self, catalogue=None):
        """Missing classes/permissions of `catalogue` (default: ours), as
        "class" or "class:perm" strings; empty when all are there."""
        missing = []
        for tclass, perms in (catalogue or classes.CATALOGUE).items():
            if not self.class_known(tclass):
                missing.append(tclass)
                continue
            missing += [f"{tclass}:{p}" for p in perms
                        if self.perm_bit(tclass, p) is None]
        return missing

    def reload(self):
        """Reload the policy (and booleans); bump seqno; notify listeners."""
        self._load()
        self._changed()

    def poll(self):
        """Check for a policy change made elsewhere (kernel mode); notify
        listeners and return True if there was one."""
        return False

    def add_reload_listener(self, callback):
        """Call `callback()` after every policy change."""
        self._listeners.append(callback)

    def _changed(self):
        self.seqno += 1
        for callback in self._listeners:
            callback()

    def describe(self):
        """A short human description for logs."""
        return self.mode
