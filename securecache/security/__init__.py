"""securecache's mandatory access control: the facade the engine uses.

    from securecache.security import open_mac, KV_ITEM, KV_CACHE

    mac = open_mac("auto")                    # or "kernel" | "policy" | "off"
    mac.has_perm(client_ctx, item_ctx, KV_ITEM, "read", key=b"k1")  -> bool
    label = mac.create_label(client_ctx, b"k1")                     -> str
    item_ctx = mac.effective_label(stored_ctx)                      -> str

open_mac(mode="auto", policy=None, booleans=None, permissive=False,
         cache_context=None, audit="stderr", *, default_item_context=None)
    mode      "auto": kernel if SELinux is enabled (and neither a policy nor
              a booleans file is given), else policy.  "policy" without a policy file uses the
              embedded default (policy/base.cil + securecache.cil).
    policy    binary policy file (--policy); booleans: `name=true|false` file
    permissive  log denials once, then allow (--permissive)
    cache_context  the kv_cache object's label (kernel: default getcon())
    audit     "stderr" | "syslog" | "none" | a file path
    default_item_context  off mode: the label of every new item
Raises PolicyLoadError (policy, booleans, library), InvalidContextError
(cache context) or MissingClassesError (enforcing, classes missing).

MAC (all contexts are str):
    has_perm(scontext, tcontext, tclass, perm, *, key=None, audit=True) -> bool
        every check; cached (AVC); audits; True if allowed or permissive.
        An invalid scontext/tcontext is checked as the unlabeled context.
        audit=False: no audit line, no denial counted (listings such as
        metadump and flush_all passing over items: avc_has_perm_noaudit).
    create_label(scontext, key: bytes) -> str
        label of a new kv_item made by scontext (name-based rules see key);
        raises SecurityError (deny the creation) if there is none.
    effective_label(stored_ctx) -> str
        stored_ctx (str or bytes) if valid under the policy, else unlabeled.
    check_context(ctx) -> bool;  canonical(ctx) -> str (InvalidContextError)
    load_peer_contexts(path=None) -> peer.PeerContexts (bundled if None)
    reload()   re-read policy and booleans (SIGHUP); flushes the AVC
    reopen_audit()   reopen a file audit sink (log rotation)
    The audit log is rate-limited (audit.DEFAULT_BURST lines, then
    audit.DEFAULT_RATE per second; pass an audit.AuditLog as `audit` to
    choose others); dropped lines are counted in audit_suppressed.
    stats() -> {mac_mode, enforcing, avc_lookups, avc_hits, avc_misses,
                avc_denials, avc_entries, avc_evictions, audit_lines,
                audit_suppressed};  reset_stats()
    mode ("kernel" | "policy" | "off"), enforcing (bool), warning (str,
    non-empty in off mode), cache_context, unlabeled_context, fingerprint,
    server (the security server), avc (the AVC), missing (list of missing
    classes/permissions; non-empty only when not enforcing)
"""

from . import classes, peer, policybuild
from .audit import AuditLog
from .avc import AVC
from .sepol import PolicyServer
from .classes import KV_CACHE, KV_ITEM
from .servers import (
    CreateLabelError, InvalidContextError, MissingClassesError,
    PolicyLoadError, SecurityError,
)

DEFAULT_CACHE_CONTEXT = "system_u:system_r:securecache_t:s0"
MODES = ("auto", "kernel", "policy", "off")

__all__ = [
    "KV_CACHE", "KV_ITEM", "MAC", "MODES", "open_mac", "classes", "peer",
    "policybuild", "SecurityError", "InvalidContextError", "PolicyLoadError",
    "MissingClassesError", "CreateLabelError", "DEFAULT_CACHE_CONTEXT",
]


class MAC:
    """One security server + its AVC + audit log + the cache's context."""

    def __init__(self, server, *, permissive=False, cache_context=None, audit="stderr"):
        self.server = server
        self.audit = audit if isinstance(audit, AuditLog) else AuditLog(audit)
        self.avc = AVC(server, self.audit, permissive=permissive)
        self.has_perm = self.avc.has_perm          # the hot path, unwrapped
        self.missing = server.has_classes()
        if self.missing and self.enforcing:
            raise MissingClassesError(
                f"the loaded policy ({server.describe()}) lacks "
                f"{', '.join(self.missing)}: install policy/securecache.cil "
                "or run with --permissive")
        self.cache_context = self._checked(cache_context or self._default_cache_context())

    def _default_cache_context(self):
        if self.server.mode == "kernel":
            return self.server.current_context()
        return DEFAULT_CACHE_CONTEXT

    def _checked(self, ctx):
        if not self.server.check_context(ctx):
            raise InvalidContextError(f"cache context {ctx} is not valid under the loaded policy")
        return self.server.canonical(ctx)

    # ------------------------------------------------------------ state
    @property
    def mode(self):
        """"kernel", "policy" or "off"."""
        return self.server.mode

    @property
    def enforcing(self):
        """True when denials are enforced (never in off mode)."""
        return self.server.mode != "off" and self.avc.enforcing

    @property
    def warning(self):
        """Non-empty when the daemon must warn loudly (off mode)."""
        return self.server.warning

    @property
    def unlabeled_context(self):
        """The policy's unlabeled context."""
        return self.server.unlabeled_context

    @property
    def fingerprint(self):
        """An identifier of the loaded policy + booleans ("" if none)."""
        return getattr(self.server, "fingerprint", "")

    # ------------------------------------------------------------ labels
    def create_label(self, scontext, key):
        """The label of a new kv_item created by `scontext` under `key`."""
        return self.server.compute_create(scontext, self.cache_context, KV_ITEM, key)

    def effective_label(self, stored_ctx):
        """The stored label if valid under the loaded policy, else the
        unlabeled context."""
        if isinstance(stored_ctx, (bytes, bytearray, memoryview)):
            try:
                stored_ctx = bytes(stored_ctx).decode("ascii")
            except UnicodeDecodeError:
                return self.server.unlabeled_context
        if self.server.check_context(stored_ctx):
            return stored_ctx
        return self.server.unlabeled_context

    def check_context(self, ctx):
        """True if `ctx` is valid under the loaded policy."""
        return self.server.check_context(ctx)

    def canonical(self, ctx):
        """The canonical form of a valid context (InvalidContextError)."""
        return self.server.canonical(ctx)

    def load_peer_contexts(self, path=None):
        """Parse a peer_contexts file (default: the bundled one), checking
        its contexts against the loaded policy."""
        return peer.PeerContexts.load(path or policybuild.bundled_peer_contexts(), self.server)

    # ------------------------------------------- decisions of an attempt
    def hold_decisions(self):
        """From now on, this thread's audit lines and denial counts wait
        for ``take_decisions`` (a transaction that may be re-run)."""
        self.avc.hold()

    def take_decisions(self):
        """The held side effects, for ``replay_decisions`` once committed."""
        return self.avc.take()

    def replay_decisions(self, held):
        """Log and count held decisions: once, after the commit."""
        self.avc.replay(held)

    # ------------------------------------------------------------ admin
    def reload(self):
        """Reload policy and booleans (SIGHUP); the AVC is flushed.

        In enforcing policy mode the new file is checked first: a policy
        without our classes and permissions is refused (MissingClassesError)
        and the old one stays, as at start."""
        if self.enforcing and isinstance(self.server, PolicyServer):
            candidate = PolicyServer(self.server.policy_path,
                                     self.server.booleans_path)
            try:
                missing = candidate.has_classes()
            finally:
                candidate.close()
            if missing:
                raise MissingClassesError(
                    f"the new policy lacks {', '.join(missing)}: "
                    "keeping the loaded one")
        self.server.reload()

    def reopen_audit(self):
        """Reopen a file audit sink."""
        self.audit.reopen()

    def stats(self):
        """Counters for `stats`."""
        result = {"mac_mode": self.mode, "enforcing": int(self.enforcing)}
        result.update(self.avc.stats())
        result.update(self.audit.stats())
        return result

    def reset_stats(self):
        """Zero the AVC and audit counters (`stats reset`)."""
        self.avc.reset_stats()
        self.audit.reset_stats()

    def close(self):
        """Close the audit sink."""
        self.audit.close()


def _server(mode, policy, booleans, default_item_context):
    if mode not in MODES:
        raise ValueError(f"unknown MAC mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "auto":
        from .kernel import selinux_enabled
        explicit = policy is not None or booleans is not None
        mode = "kernel" if not explicit and selinux_enabled() else "policy"
    if mode == "kernel" and (policy is not None or booleans is not None):
        raise ValueError("--mac=kernel uses the host's policy and booleans: "
                         "no policy or booleans file")
    if mode == "kernel":
        from .kernel import KernelServer
        return KernelServer()
    if mode == "off":
        from .off import DEFAULT_ITEM_CONTEXT, OffServer
        return OffServer(default_item_context or DEFAULT_ITEM_CONTEXT)
    from .sepol import PolicyServer
    return PolicyServer(policy or policybuild.default_policy_path(), booleans)


def open_mac(mode="auto", policy=None, booleans=None, permissive=False,
             cache_context=None, audit="stderr", *, default_item_context=None):
    """Build the MAC facade (see the module docstring)."""
    server = _server(mode, policy, booleans, default_item_context)
    return MAC(server, permissive=permissive, cache_context=cache_context, audit=audit)
