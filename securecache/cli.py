"""`securecache <command>`: serve, policy build.

``serve`` takes memcached's flags where they mean the same (-p -l -s -a -c
-m -M -I -v -vv -U 0 -A) plus its own (--data-dir, durability, MAC).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .tools import cli as tools_cli

MEMCACHED_VERSION = "1.6.18"
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """memcached's -I: bytes, or with a k/m suffix."""
    text = text.strip().lower()
    unit = UNITS.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in UNITS else text
    try:
        value = int(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text}") from None
    if not 1024 <= value <= 1 << 30:
        raise argparse.ArgumentTypeError("item size must be 1k..1024m")
    return value


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mask: {text}") from None


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the cache daemon (foreground)")
    p.add_argument("-p", "--port", type=int, default=11211,
                   help="TCP port (default 11211; 0 disables TCP)")
    p.add_argument("-l", "--listen", default="127.0.0.1",
                   help="comma-separated addresses to listen on "
                        "(default 127.0.0.1)")
    p.add_argument("-s", "--unix-socket", help="UNIX socket path")
    p.add_argument("-a", "--unix-mask", type=_octal, default=0o700,
                   help="UNIX socket permissions, octal (default 0700)")
    p.add_argument("-c", "--conn-limit", type=int, default=1024)
    p.add_argument("-t", "--threads", type=int, default=1,
                   help="worker processes sharing the listeners and the "
                        "LMDB environment (default 1)")
    p.add_argument("-m", "--memory-limit", type=int, default=64,
                   help="LMDB map size in megabytes (default 64)")
    p.add_argument("-M", "--disable-evictions", action="store_true",
                   help="answer out-of-memory instead of evicting")
    p.add_argument("-I", "--max-item-size", type=_size, default=1 << 20)
    p.add_argument("-U", "--udp-port", type=int, default=0,
                   help="UDP is not served: only 0 is accepted")
    p.add_argument("-A", "--enable-shutdown", action="store_true")
    p.add_argument("-Y", "--auth-file", type=Path,
                   help="user:password lines; every client must log in "
                        "(text: memcached's text auth; binary: SASL PLAIN)")
    p.add_argument("-S", "--enable-sasl", action="store_true",
                   help="SASL PLAIN for binary clients (needs -Y)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--idle-timeout", type=int, default=0)
    p.add_argument("--data-dir", default="./var/securecache")
    p.add_argument("--durability", choices=("fsync", "async"),
                   default="fsync")
    p.add_argument("--sync-interval", type=int, default=1000,
                   help="milliseconds between syncs with async durability")
    p.add_argument("--mac", choices=("auto", "kernel", "policy", "off"),
                   default="auto")
    p.add_argument("--policy", type=Path, help="binary policy file")
    p.add_argument("--booleans", type=Path, help="name=true|false lines")
    p.add_argument("--permissive", action="store_true")
    p.add_argument("--cache-context", help="the cache object's context")
    p.add_argument("--peer-contexts", type=Path,
                   help="KIND MATCH CONTEXT lines (default: bundled)")
    p.add_argument("--default-client-context",
                   help="context of clients that peer_contexts does not map")
    p.add_argument("--audit-log", default="stderr",
                   help="stderr, syslog or a file path")
    p.set_defaults(func=serve)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="securecache", description=__doc__)
    top.add_argument("--version", action="version", version=__version__)
    sub = top.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    tools_cli.add_commands(sub)   # dump restore check relabel stats policy
    return top


def serve(args) -> int:
    """Open storage and the security server, then serve until stopped."""
    from .engine import Engine
    from .engine.auth import AuthFileError, Users
    from .security import SecurityError, open_mac, peer
    from .server.app import Listen, Server, run
    from .server.workers import Supervisor
    from .storage import Storage, StorageError

    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="securecache[%(process)d]: %(message)s", stream=sys.stderr)
    log = logging.getLogger("securecache")
    if args.udp_port:
        log.error("UDP is not served; use -U 0 (the default)")
        return 2
    if args.enable_sasl and not args.auth_file:
        log.error("-S needs -Y FILE: SASL PLAIN checks users of the auth file")
        return 2
    try:
        mac = open_mac(mode=args.mac, policy=args.policy,
                       booleans=args.booleans, permissive=args.permissive,
                       cache_context=args.cache_context, audit=args.audit_log)
        contexts = mac.load_peer_contexts(args.peer_contexts)
        default = mac.canonical(args.default_client_context) \
            if args.default_client_context else None
        users = Users.load(args.auth_file) if args.auth_file else None
        if args.threads < 1:
            raise ValueError("-t needs at least 1 worker")
        open_storage = lambda: Storage(  # noqa: E731
            args.data_dir, map_size=args.memory_limit << 20,
            durability=args.durability)
        if args.threads > 1:
            open_storage().close()    # refuse a bad directory before forking
        storage = open_storage() if args.threads == 1 else None
    except (StorageError, SecurityError, AuthFileError, OSError,
            ValueError) as error:
        log.error("%s", error)
        return 1
    if mac.warning:
        log.warning("%s", mac.warning)
    log.info("mac=%s enforcing=%s cache context %s", mac.mode,
             mac.enforcing, mac.cache_context)

    def make_engine(storage):
        engine = Engine(storage, mac, max_item_size=args.max_item_size,
                        evictions=not args.disable_evictions,
                        version=f"{MEMCACHED_VERSION}-securecache-{__version__}",
                        shutdown_enabled=args.enable_shutdown)
        engine.verbosity = args.verbose
        engine.users = users
        engine.settings = [("maxconns", args.conn_limit),
                           ("tcpport", args.port), ("udpport", 0),
                           ("inter", args.listen),
                           ("domain_socket", args.unix_socket or "NULL"),
                           ("umask", f"{args.unix_mask:o}")]
        engine.context_for_user = context_for_user
        return engine
    listen = Listen(addresses=args.listen.split(",") if args.port else [],
                    port=args.port, unix_path=args.unix_socket,
                    unix_mask=args.unix_mask, max_connections=args.conn_limit,
                    idle_timeout=args.idle_timeout, auth=users is not None,
                    sync_interval=args.sync_interval / 1000)
    def identity(sock):
        try:
            facts = peer.facts(sock)
        except peer.PeerError as error:
            log.warning("cannot identify a client: %s", error)
            return None, {}
        return peer.resolve(contexts, default=default, **facts), facts

    def context_for_user(session, user):
        return peer.resolve(contexts, default=default, user=user,
                            **session.facts)

    if args.threads == 1:
        return run(Server(make_engine(storage), identity, listen))

    def serve_worker(sockets, shared, slot):
        # After the fork: this worker's own LMDB environment.
        server = Server(make_engine(open_storage()), identity, listen,
                        sockets=sockets, shared=shared, threads=args.threads)
        return run(server)
    return Supervisor(args.threads, serve_worker, listen).run()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
