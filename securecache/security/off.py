"""The `off` security server: MAC disabled, and it says so.

Every access is allowed; every new item gets one configured context; any
syntactically valid context is "valid".  The server carries a warning that
the daemon prints at start and shows in `stats`; MAC.stats() reports
mac_mode=off and enforcing=0.  Nothing else in the package ever falls back
to this server: it is chosen explicitly (--mac=off) or not at all.
"""

from . import classes
from .servers import (
    ALL_PERMS, HANDLE_ALLOW, AccessDecision, SecurityServer,
    require_context_syntax, context_syntax_ok,
)

DEFAULT_ITEM_CONTEXT = "system_u:object_r:securecache_item_t:s0"
UNLABELED_CONTEXT = "system_u:object_r:unlabeled_t:s0"
WARNING = ("MAC IS OFF (--mac=off): no access control; every client may read, "
           "write, delete and relabel every item")


class OffServer(SecurityServer):
    """Allows everything; labels new items with `default_item_context`."""

    mode = "off"
    warning = WARNING

    def __init__(self, default_item_context=DEFAULT_ITEM_CONTEXT):
        super().__init__()
        require_context_syntax(default_item_context)
        self.default_item_context = default_item_context

    def _load(self):
        pass

    def compute_av(self, scontext, tcontext, tclass):
        return AccessDecision(ALL_PERMS, 0, 0, False)

    def perm_bit(self, tclass, perm):
        bit = classes.perm_bit(tclass, perm)
        return bit if bit is not None else ALL_PERMS

    def class_known(self, tclass):
        return tclass in classes.CATALOGUE

    def compute_create(self, scontext, tcontext, tclass, name=None):
        return self.default_item_context

    def check_context(self, ctx):
        return context_syntax_ok(ctx)

    def canonical(self, ctx):
        require_context_syntax(ctx)
        return ctx

    @property
    def unlabeled_context(self):
        return UNLABELED_CONTEXT

    @property
    def handle_unknown(self):
        return HANDLE_ALLOW

    def describe(self):
        return "off (no access control)"
