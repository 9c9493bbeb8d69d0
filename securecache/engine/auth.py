"""Authentication: memcached's auth file, SASL PLAIN and text auth.

How this works: ``-Y FILE`` names a file of ``user:password`` lines (as
memcached's). With it, every connection must authenticate before anything
else: binary clients with SASL PLAIN, text clients with memcached's text
authentication (a ``set`` whose data is ``user password``). Both arrive
here as ``Authenticate`` requests. Passwords are compared in constant time
(``hmac.compare_digest``, over all users, so timing does not reveal which
users exist). A successful login gives the connection the context that
``peer_contexts`` maps the user to (its ``user`` lines), and that context
must still hold ``kv_cache:connect``.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from ..protocol import events as ev
from ..protocol.events import Status


class AuthFileError(ValueError):
    """The auth file cannot be read or has a bad line."""


class Users:
    """The users of an auth file."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users

    @classmethod
    def load(cls, path: str | Path) -> "Users":
        """Read ``user:password`` lines (blank lines and ``#`` ignored)."""
        try:
            text = Path(path).read_bytes()
        except OSError as error:
            raise AuthFileError(f"cannot read auth file {path}: {error}") \
                from None
        users = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, sep, password = line.partition(b":")
            if not sep or not user:
                raise AuthFileError(f"{path}:{number}: expected user:password")
            users[user.decode("utf-8", "replace")] = password
        if not users:
            raise AuthFileError(f"auth file {path} names no user")
        return cls(users)

    def verify(self, user: str, password: bytes) -> bool:
        """Does ``password`` belong to ``user``? (constant time)"""
        match = False
        for name, secret in self.users.items():
            same_password = hmac.compare_digest(secret, password)
            match |= hmac.compare_digest(name.encode(), user.encode()) \
                and same_password
        return match


EXEMPT = (ev.Authenticate, ev.Mechanisms, ev.Version)
"""What an unauthenticated client may still send (as memcached's -S allows;
a text connection is gated by its codec before anything reaches here)."""


def mechanisms(op, request: ev.Mechanisms):
    """SASL LIST MECHS: PLAIN (the codec words the list)."""
    return Status.OK


def authenticate(op, request: ev.Authenticate):
    """Check the password; then take the user's context from peer_contexts."""
    engine = op.engine
    op.counters["auth_cmds"] += 1
    if engine.users is None or not engine.users.verify(request.user,
                                                       request.password):
        op.counters["auth_errors"] += 1
        return ev.AuthFailed()
    session = op.session
    scontext = engine.context_for_user(session, request.user)
    if scontext is None or not engine.mac.has_perm(
            scontext, engine.mac.cache_context, "kv_cache", "connect"):
        op.counters["auth_errors"] += 1           # kv_cache:connect
        return ev.AuthFailed()
    session.scontext = scontext
    session.user = request.user
    session.authenticated = True
    return Status.AUTHENTICATED
