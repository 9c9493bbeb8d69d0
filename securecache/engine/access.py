"""Permission checks of the object manager, in one place.

How this works: a handler asks ``Access`` before it acts. ``item`` checks a
``kv_item`` permission of the client on an item's label (the effective
label: a stored label that the loaded policy no longer knows is checked as
the policy's ``unlabeled`` context); ``cache`` checks a ``kv_cache``
permission on the cache object. A failed ``require`` raises
``AccessDenied``, which the engine turns into the one "denied" reply in one
place; ``allowed`` answers a bool for the checks whose denial hides an
item (a denied read is a miss). The audit record is written by the
security server's AVC, never here, and the client learns nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..security import SecurityError
from ..storage import Record, Txn


MAX_LABELS = 1 << 16
MAX_CREATELABELS = 256
"""Distinct ``createlabel`` contexts one connection may set (issue 9): each
new context costs the security server and the label table a little, and
no connection may make the daemon pay that without bound."""


class AccessDenied(Exception):
    """The policy denied the request; the client is told only "denied"."""


class InvalidLabel(Exception):
    """A context given by the client is not valid under the loaded policy."""


@dataclass(slots=True)
class Session:
    """What the engine knows of one client connection."""

    scontext: str
    createlabel: str | None = None
    user: str | None = None
    peer: str = ""
    authenticated: bool = False
    facts: dict = field(default_factory=dict)
    """What identified the client (peer label, uid, address), kept so that
    an authenticated user can be mapped again through peer_contexts."""
    fd: int = -1
    """The connection's socket, as memcached's watch lines show it (cfd)."""
    createlabels: set = field(default_factory=set)
    """The distinct contexts this connection has set with ``createlabel``
    (at most MAX_CREATELABELS)."""

    def may_set_createlabel(self, context: str) -> bool:
        """Record ``context`` as set by ``createlabel``; False if it is a new
        one and the connection has used up MAX_CREATELABELS."""
        if context in self.createlabels:
            return True
        if len(self.createlabels) >= MAX_CREATELABELS:
            return False
        self.createlabels.add(context)
        return True


class Access:
    """The engine's view of the security server (see module docstring)."""

    ITEM = "kv_item"
    CACHE = "kv_cache"

    def __init__(self, mac) -> None:
        self.mac = mac
        self.has_perm = mac.has_perm
        # label id -> effective context: a check on an item is then two
        # dict hits (this, the AVC). Label ids are never reused, so only a
        # policy reload (validity may change) empties it.
        self._effective: dict[int, str] = {}
        mac.server.add_reload_listener(self._effective.clear)

    def label_of(self, txn: Txn, record: Record) -> str:
        """The effective context of a stored item."""
        label_id = record.label_id
        context = self._effective.get(label_id)
        if context is None:
            stored = txn.label(label_id)
            text = stored.decode("ascii", "replace") if stored is not None \
                else ""
            context = self.mac.effective_label(text)
            if stored is not None:        # an id another process is writing
                if len(self._effective) >= MAX_LABELS:
                    self._effective.clear()
                self._effective[label_id] = context
        return context

    def allowed(self, session: Session, txn: Txn, record: Record, perm: str,
                key: bytes, audit: bool = True) -> bool:
        """Does the client hold ``perm`` on this item?

        ``audit=False`` is for listings (metadump, flush_all) that pass over
        every item: a hidden item there is not an attempt on that item.
        """
        return self.has_perm(session.scontext, self.label_of(txn, record),
                             self.ITEM, perm, key=key, audit=audit)

    def require(self, session: Session, txn: Txn, record: Record, perm: str,
                key: bytes) -> None:
        """Raise ``AccessDenied`` unless the client holds ``perm``."""
        if not self.allowed(session, txn, record, perm, key):
            raise AccessDenied(perm)

    def require_label(self, session: Session, tcontext: str, perm: str,
                      key: bytes | None) -> None:
        """``perm`` on a label that is not (yet) an item's: create, relabelto."""
        if not self.mac.has_perm(session.scontext, tcontext, self.ITEM, perm,
                                 key=key):
            raise AccessDenied(perm)

    def require_cache(self, session: Session, perm: str) -> None:
        """``perm`` of class ``kv_cache`` on the cache object."""
        if not self.mac.has_perm(session.scontext, self.mac.cache_context,
                                 self.CACHE, perm):
            raise AccessDenied(perm)

    def new_label(self, session: Session, key: bytes) -> str:
        """The label of an item this client creates now under ``key``."""
        if session.createlabel is not None:
            return session.createlabel
        try:
            return self.mac.create_label(session.scontext, key)
        except SecurityError:
            # No valid label can be computed (the client's domain left the
            # policy, or the policy lacks kv_item): the creation is denied.
            raise AccessDenied("create") from None

    def valid_context(self, context: str) -> str:
        """The canonical form of a client-given context, or InvalidLabel."""
        if not self.mac.check_context(context):
            raise InvalidLabel(context)
        return self.mac.canonical(context)
