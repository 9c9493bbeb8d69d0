"""`securecache <command>`: serve, policy build.

``serve`` takes memcached's flags where they mean the same (-p -l -s -a -c
-m -M -I -v -vv -vvv -U 0 -A -Y -S -B -P -R -C -b -o -D -F -X -L -u -Z; see
``memflags``) plus its own (--data-dir, durability, MAC, --tls-*).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .memflags import add_memcached_flags, extended, listen_addresses
from .tools import cli as tools_cli

MEMCACHED_VERSION = "1.6.18"
UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
EX_USAGE = 64               # memcached's exit status for impossible settings


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


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default, said once: "none"/"off" for unset ones."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.default is None or action.default is False:
            word = "off" if action.default is False else "none"
            return f"{text} (default: {word})"
        return super()._get_help_string(action)


def _serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="run the cache daemon (foreground)",
        formatter_class=_Help,
        description="memcached's flags where they mean the same, plus "
                    "securecache's own (--data-dir, durability, MAC).")
    p.add_argument("-p", "--port", type=int, default=11211,
                   help="TCP port (0 disables TCP)")
    p.add_argument("-l", "--listen", default="127.0.0.1",
                   help="comma-separated addresses, each ADDR, ADDR:PORT "
                        "or [V6]:PORT (memcached listens everywhere; "
                        "securecache on loopback unless told)")
    p.add_argument("-s", "--unix-socket", help="UNIX socket path")
    p.add_argument("-a", "--unix-mask", type=_octal, default="0700",
                   help="UNIX socket permissions, octal")
    p.add_argument("-c", "--conn-limit", type=int, default=1024,
                   help="maximum simultaneous connections")
    p.add_argument("-t", "--threads", type=int, default=1,
                   help="worker processes sharing the listeners and the "
                        "LMDB environment (one process: the least CPU per "
                        "request; more scale reads over cores)")
    p.add_argument("-m", "--memory-limit", type=int, default=64,
                   help="megabytes the cache may hold (LMDB pages in use); "
                        "at least twice -I")
    p.add_argument("-M", "--disable-evictions", action="store_true",
                   help="answer out-of-memory instead of evicting")
    p.add_argument("-I", "--max-item-size", type=_size, default=1 << 20,
                   help="largest value, bytes or with k/m (1k..1024m)")
    p.add_argument("-U", "--udp-port", type=int, default=0,
                   help="UDP is not served: only 0 is accepted")
    p.add_argument("-A", "--enable-shutdown", action="store_true",
                   help="allow the shutdown command")
    p.add_argument("-Y", "--auth-file", type=Path,
                   help="user:password lines; every client must log in "
                        "(text: memcached's text auth; binary: SASL PLAIN)")
    p.add_argument("-S", "--enable-sasl", action="store_true",
                   help="SASL PLAIN for binary clients (needs -Y)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: warnings and errors while serving (start and "
                        "stop lines are always logged); -vv: also every "
                        "request (kind and keys) and reply line; -vvv: also "
                        "the event loop's own debug log")
    add_memcached_flags(p)
    p.add_argument("--idle-timeout", type=int, default=0,
                   help="close connections idle this many seconds since "
                        "their last whole request (0: never; also -o "
                        "idle_timeout=N)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="close a connection whose request began arriving "
                        "this many seconds ago and is not whole yet")
    p.add_argument("--data-dir", default="./var/securecache",
                   help="the LMDB directory, relative to the current "
                        "directory unless absolute")
    p.add_argument("--durability", choices=("fsync", "async"),
                   default="fsync", help="fsync: a reply after its group "
                   "is on disk; async: synced every --sync-interval")
    p.add_argument("--sync-interval", type=int, default=1000,
                   help="milliseconds between syncs with async durability")
    p.add_argument("--mac", choices=("auto", "kernel", "policy", "off"),
                   default="auto", help="security server: the kernel's "
                   "SELinux, the bundled policy in userspace, or none")
    p.add_argument("--policy", type=Path,
                   help="binary policy file (default: the bundled one)")
    p.add_argument("--booleans", type=Path,
                   help="name=true|false lines")
    p.add_argument("--permissive", action="store_true",
                   help="log each denial once, then allow")
    p.add_argument("--cache-context",
                   help="the cache object's context (default: the daemon's "
                        "own on SELinux, else "
                        "system_u:system_r:securecache_t:s0)")
    p.add_argument("--peer-contexts", type=Path,
                   help="KIND MATCH CONTEXT lines (default: bundled "
                        "policy/peer_contexts)")
    p.add_argument("--default-client-context",
                   help="context of clients that peer_contexts does not map "
                        "(default: refuse them)")
    p.add_argument("--audit-log", default="stderr",
                   help="stderr, syslog or a file path")
    p.set_defaults(func=serve)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="securecache", description=__doc__)
    top.add_argument("--version", action="version",
                     version=f"securecache {__version__} (memcached "
                             f"{MEMCACHED_VERSION} protocol)")
    sub = top.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    tools_cli.add_commands(sub)   # dump restore check relabel stats policy
    return top


def serve(args) -> int:
    """Open storage and the security server, bind the listeners, drop root
    (-u), then serve until stopped."""
    from .server.workers import bind

    log = _logging(args)
    problem = _refusal(args)
    if problem is not None:
        message, status = problem
        print(message, file=sys.stderr)
        return status
    if args.enable_largepages:
        log.info("-L: the LMDB map is paged by the kernel; huge pages "
                 "apply as the host's transparent huge pages are set")
    opened = _open(args, log)
    if opened is None:
        return 1
    mac, identity, context_for_user, users, open_storage, tls = opened
    if mac.warning:
        log.warning("%s", mac.warning)
    log.info("mac=%s enforcing=%s cache context %s", mac.mode,
             mac.enforcing, mac.cache_context)
    listen = _listen(args, users, tls)

    def make_engine(storage):
        engine = _engine(args, storage, mac, users)
        engine.context_for_user = context_for_user
        return engine

    with _pidfile(args.pidfile):
        try:
            sockets = bind(listen, args.threads)
        except OSError as error:
            log.error("cannot listen: %s", error)
            return 1
        try:
            return _serve_bound(args, sockets, make_engine, identity, listen,
                                open_storage)
        finally:
            _unlink(args.unix_socket, log)


def _serve_bound(args, sockets, make_engine, identity, listen, open_storage):
    """Drop root (-u), then serve on the bound ``sockets``: in this
    process, or in ``-t`` worker processes."""
    from .server.app import Server, run
    from .server.privilege import PrivilegeError, become
    from .server.workers import Supervisor
    try:                                   # root's work is done: -u USER
        become(args.account, args.data_dir, args.unix_socket)
    except PrivilegeError as error:
        print(error, file=sys.stderr)
        return error.status
    if args.threads == 1:
        storage = _storage(open_storage)
        if storage is None:
            return 1
        return run(Server(make_engine(storage), identity, listen,
                          sockets=sockets[0]))

    def serve_worker(sockets, shared, slot):
        # After the fork: this worker's own LMDB environment.
        return run(Server(make_engine(open_storage()), identity, listen,
                          sockets=sockets, shared=shared,
                          threads=args.threads))
    return Supervisor(args.threads, serve_worker, listen,
                      sockets=sockets).run()


def _storage(open_storage):
    """The storage, opened as the user the daemon now is; None, logged."""
    from .storage import StorageError
    try:
        return open_storage()
    except (StorageError, OSError) as error:
        logging.getLogger("securecache").error("%s", error)
        return None


def _unlink(path: str | None, log) -> None:
    """Remove a file the daemon made (UNIX socket, pid file); after -u the
    directory may not be the daemon's to change: say so, go on."""
    if not path:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("cannot remove %s: %s", path, error)


def _logging(args) -> logging.Logger:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="securecache[%(process)d]: %(message)s", stream=sys.stderr)
    if args.verbose > 2:            # -vvv: the event loop's debug mode too
        os.environ["PYTHONASYNCIODEBUG"] = "1"
        logging.getLogger("asyncio").setLevel(logging.DEBUG)
    return logging.getLogger("securecache")


def _open(args, log):
    """The security server, who the clients are, the users and a way to
    open the storage (checked once here); None after logging why not."""
    from .engine.auth import AuthFileError, Users
    from .security import SecurityError, open_mac, peer
    from .server.privilege import check_audit_path
    from .server.tls import TLS
    from .storage import Storage, StorageError
    try:
        if args.threads < 1:
            raise ValueError("-t needs at least 1 worker")
        unsafe = check_audit_path(args.audit_log)
        if unsafe:
            raise ValueError(unsafe)
        tls = TLS(args.tls) if args.tls else None      # read while root
        mac = open_mac(mode=args.mac, policy=args.policy,
                       booleans=args.booleans, permissive=args.permissive,
                       cache_context=args.cache_context, audit=args.audit_log)
        contexts = mac.load_peer_contexts(args.peer_contexts)
        default = mac.canonical(args.default_client_context) \
            if args.default_client_context else None
        users = Users.load(args.auth_file) if args.auth_file else None
        open_storage = lambda: Storage(  # noqa: E731
            args.data_dir, map_size=args.memory_limit << 20,
            durability=args.durability)
        open_storage().close()       # a bad directory is refused here
    except (StorageError, SecurityError, AuthFileError, OSError,
            ValueError) as error:
        log.error("%s", error)
        return None

    def identity(sock, peercert=None):
        try:
            facts = peer.facts(sock, peercert)
        except peer.PeerError as error:
            log.warning("cannot identify a client: %s", error)
            return None, {}
        return peer.resolve(contexts, default=default, **facts), facts

    def context_for_user(session, user):
        return peer.resolve(contexts, default=default, user=user,
                            **session.facts)
    return mac, identity, context_for_user, users, open_storage, tls


def _engine(args, storage, mac, users):
    from .engine import Engine
    from .server.tls import settings_rows
    engine = Engine(storage, mac, max_item_size=args.max_item_size,
                    evictions=not args.disable_evictions,
                    version=MEMCACHED_VERSION,    # clients parse 1.6.18
                    shutdown_enabled=args.enable_shutdown)
    engine.verbosity = args.verbose
    engine.users = users
    engine.tunables = _tunables(args)
    engine.settings = [("maxconns", args.conn_limit),
                       ("tcpport", args.port), ("udpport", 0),
                       ("inter", args.listen),
                       ("domain_socket", args.unix_socket or "NULL"),
                       ("umask", f"{args.unix_mask:o}"),
                       ("binding_protocol", args.protocol),
                       ("tcp_backlog", args.listen_backlog),
                       ("idle_timeout", args.idle_timeout),
                       # -Y: memcached names the file; SASL comes with it
                       ("auth_enabled_sasl", "yes" if users else "no"),
                       ("auth_enabled_ascii",
                        str(args.auth_file) if users else "no"),
                       ("num_threads", args.threads),
                       *settings_rows(args.tls)]
    return engine


def _listen(args, users, tls):
    from .server.app import Listen
    return Listen(tls=tls, addresses=args.addresses if args.port else [],
                  port=args.port, unix_path=args.unix_socket,
                  unix_mask=args.unix_mask, max_connections=args.conn_limit,
                  idle_timeout=args.idle_timeout, auth=users is not None,
                  request_timeout=args.request_timeout,
                  sync_interval=args.sync_interval / 1000,
                  protocol=args.protocol, backlog=args.listen_backlog)


def _refusal(args) -> tuple[str, int] | None:
    """Why these settings cannot run (memcached's sentence and exit status
    where it has them) and the exit status, or None; also applies -o and
    -l to ``args``."""
    if args.udp_port:
        return "UDP is not served; use -U 0 (the default)", 2
    if args.enable_sasl and not args.auth_file:
        return "-S needs -Y FILE: SASL PLAIN checks users of the auth file", 2
    if args.max_item_size > (args.memory_limit << 20) // 2:
        return ("Cannot set item size limit higher than 1/2 of memory max.",
                EX_USAGE)
    try:
        args.options = extended(args.extended or [])
        args.addresses, args.port = listen_addresses(args.listen, args.port)
    except ValueError as error:
        return str(error), 2
    args.idle_timeout = args.options.get("idle_timeout", args.idle_timeout)
    return _tls_or_root_refusal(args)


def _tls_or_root_refusal(args) -> tuple[str, int] | None:
    """-Z's settings into ``args.tls`` (memcached's sentence when they
    cannot serve), then memcached's refusals to run as root without -u or
    as an unknown user; the account to become into ``args.account``."""
    from .server.privilege import PrivilegeError, lookup, root_refusal
    from .server.tls import settings
    args.tls, problem = settings(args, args.options)
    if problem is not None:
        return problem, EX_USAGE
    problem = root_refusal(args.user)
    if problem is not None:
        return problem, EX_USAGE
    try:
        args.account = lookup(args.user)
    except PrivilegeError as error:
        return str(error), error.status
    return None


def _tunables(args):
    from .engine.detail import Tunables
    return Tunables(max_limit=args.memory_limit << 20,
                    delimiter=(args.prefix_delimiter or ":").encode("latin-1"),
                    cas_enabled=not args.disable_cas,
                    detail=args.prefix_delimiter is not None,
                    slab_automove=args.options.get("slab_automove", 1),
                    lru_crawler="no_lru_crawler" not in args.options,
                    lru_crawler_sleep=args.options.get("lru_crawler_sleep",
                                                       100),
                    lru_crawler_tocrawl=args.options.get(
                        "lru_crawler_tocrawl", 0) & 0xFFFF_FFFF,
                    reqs_per_event=args.max_reqs_per_event,
                    flush_enabled=not args.disable_flush_all,
                    dump_enabled=not args.disable_dumping,
                    watch_enabled=not args.disable_watch)


@contextlib.contextmanager
def _pidfile(path: str | None):
    """-P: the pid in a file while serving."""
    if path:
        Path(path).write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        _unlink(path, logging.getLogger("securecache"))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
