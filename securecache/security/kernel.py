"""The `kernel` security server: the host's SELinux, through libselinux.

How this works: on an SELinux host the kernel's security server holds the
policy (securecache.cil installed with semodule).  libselinux's Python
bindings (python3-selinux) ask it: security_compute_av_flags for access
vectors (with the permissive flag of the source domain),
security_compute_create_name for create labels, security_check_context and
security_canonicalize_context for contexts.  Class and permission values
come from string_to_security_class / string_to_av_perm (0 = unknown).
selinux_status_updated() says when the host loaded a new policy or changed
booleans or enforcing mode: `poll` then flushes the AVC.

libselinux's one-call access check is NEVER used: it allows everything when SELinux is
disabled.  Without SELinux in the kernel this server refuses to start.
"""

from .servers import (
    ALL_PERMS, HANDLE_ALLOW, HANDLE_DENY, AccessDecision, CreateLabelError,
    InvalidContextError, PolicyLoadError, SecurityServer, context_syntax_ok,
    require_context_syntax,
)


def _selinux():
    try:
        import selinux
    except ImportError as exc:
        raise PolicyLoadError(
            "libselinux's Python bindings are missing (Debian: python3-selinux)") from exc
    if not hasattr(selinux, "security_compute_av_flags"):
        raise PolicyLoadError(
            "the `selinux` module is a shim without libselinux's bindings; "
            "use Debian's python3-selinux (venv with --system-site-packages)")
    return selinux


def selinux_enabled():
    """True if the running kernel has SELinux enabled (False if unknown)."""
    try:
        return _selinux().is_selinux_enabled() == 1
    except PolicyLoadError:
        return False


def _result(value):
    """The output of a binding that returns [rc, out] or just out."""
    return value[-1] if isinstance(value, (list, tuple)) else value


class KernelServer(SecurityServer):
    """Decisions from the host kernel's SELinux security server."""

    mode = "kernel"
    needs_polling = True

    def __init__(self):
        super().__init__()
        self._se = _selinux()
        if self._se.is_selinux_enabled() != 1:
            raise PolicyLoadError("SELinux is not enabled in this kernel: use --mac=policy")
        try:
            self._se.selinux_status_open(1)
        except OSError as exc:
            raise PolicyLoadError(f"selinux_status_open failed: {exc}") from exc
        self._load()

    def _load(self):
        se = self._se
        self._classes, self._perms = {}, {}
        self._unlabeled = _result(se.security_get_initial_context_raw("unlabeled"))
        deny = se.security_deny_unknown()
        if deny < 0:
            raise PolicyLoadError("security_deny_unknown failed")
        self._handle_unknown = HANDLE_DENY if deny else HANDLE_ALLOW

    # ------------------------------------------------------------ changes
    def poll(self):
        if self._se.selinux_status_updated() > 0:
            self._load()
            self._changed()
            return True
        return False

    @property
    def host_enforcing(self):
        return self._se.selinux_status_getenforce() == 1

    # ------------------------------------------------------------ classes
    def _class(self, tclass):
        value = self._classes.get(tclass)
        if value is None:
            value = self._classes[tclass] = self._se.string_to_security_class(tclass)
        return value

    def class_known(self, tclass):
        return self._class(tclass) != 0

    def perm_bit(self, tclass, perm):
        key = (tclass, perm)
        if key not in self._perms:
            cls = self._class(tclass)
            bit = self._se.string_to_av_perm(cls, perm) if cls else 0
            self._perms[key] = bit or None
        return self._perms[key]

    # ------------------------------------------------------------ questions
    def compute_av(self, scontext, tcontext, tclass):
        require_context_syntax(scontext)
        require_context_syntax(tcontext)
        cls = self._class(tclass)
        if not cls:
            allowed = ALL_PERMS if self._handle_unknown == HANDLE_ALLOW else 0
            return AccessDecision(allowed, 0, ALL_PERMS, False)
        avd = self._se.av_decision()
        try:
            self._se.security_compute_av_flags_raw(scontext, tcontext, cls, 0, avd)
        except OSError as exc:
            raise InvalidContextError(f"{scontext} -> {tcontext} ({tclass}): {exc}") from exc
        permissive = bool(avd.flags & self._se.SELINUX_AVD_FLAGS_PERMISSIVE)
        return AccessDecision(avd.allowed, avd.auditallow, avd.auditdeny, permissive)

    def compute_create(self, scontext, tcontext, tclass, name=None):
        require_context_syntax(scontext)
        require_context_syntax(tcontext)
        cls = self._class(tclass)
        if not cls:
            raise CreateLabelError(f"class {tclass} is not in the host policy")
        objname = _object_name(name)
        try:
            if objname is None:
                return _result(self._se.security_compute_create_raw(scontext, tcontext, cls))
            return _result(self._se.security_compute_create_name_raw(
                scontext, tcontext, cls, objname))
        except OSError as exc:
            raise CreateLabelError(f"create label for {scontext} in {tcontext}: {exc}") from exc

    def check_context(self, ctx):
        if not context_syntax_ok(ctx):
            return False
        try:
            return self._se.security_check_context_raw(ctx) == 0
        except OSError:
            return False

    def canonical(self, ctx):
        require_context_syntax(ctx)
        try:
            return _result(self._se.security_canonicalize_context_raw(ctx))
        except OSError as exc:
            raise InvalidContextError(f"invalid context {ctx}: {exc}") from exc

    @property
    def unlabeled_context(self):
        return self._unlabeled

    @property
    def handle_unknown(self):
        return self._handle_unknown

    def current_context(self):
        """The daemon's own context (getcon): the cache object's label."""
        return _result(self._se.getcon_raw())

    def describe(self):
        return "kernel (host SELinux)"


def _object_name(name):
    """The key as the object name the kernel compares with name-based
    type_transition rules; None when it cannot be passed as a C string."""
    if name is None:
        return None
    if isinstance(name, str):
        return name or None
    if not name or 0 in name:     # NUL (as an int: see sepol.compute_create)
        return None
    try:
        return bytes(name).decode("utf-8")
    except UnicodeDecodeError:
        return None
