"""The offline tools' subcommands: dump, restore, check, relabel, stats,
policy build|why.  ``add_commands(sub)`` adds them to the main parser
(securecache/cli.py); each ``run_*`` returns the exit status.

Exit status: 0 success; 1 an error (or check: an inconsistency; relabel:
some changes denied); 2 bad usage; 3 restore: the dump is truncated,
corrupt or of an unknown version (check: consistent, but labels invalid
under the policy); 4 restore: items refused for their labels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _storage_options(p, *, mac=True) -> None:
    p.add_argument("--data-dir", default="./var/securecache",
                   help="the data directory (default ./var/securecache)")
    p.add_argument("-m", "--memory-limit", type=int, default=64,
                   help="LMDB map size in megabytes: the daemon's -m (default 64)")
    if mac:
        p.add_argument("--mac", choices=("auto", "kernel", "policy", "off"), default="auto")
        p.add_argument("--policy", type=Path, help="binary policy file")
        p.add_argument("--booleans", type=Path, help="name=true|false lines")
        p.add_argument("--audit-log", default="stderr", help="stderr, syslog or a file path")


def add_commands(sub) -> None:
    """Add the tools' subcommands to the ``securecache`` subparsers."""
    p = sub.add_parser("dump", help="write a consistent snapshot of the items")
    _storage_options(p)
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("-o", "--output", default="-", help="file, or - for stdout (default)")
    p.set_defaults(func=run_dump)

    p = sub.add_parser("restore", help="write a dump's items into a data directory")
    p.add_argument("file", help="the dump file, or - for stdin")
    _storage_options(p)
    p.add_argument("--on-invalid", choices=("unlabeled", "relabel", "fail"), default="unlabeled",
                   help="an item whose label the policy rejects: store it unlabeled "
                        "(default), relabel it from --contexts, or refuse the restore")
    p.add_argument("--contexts", type=Path, help="kv_contexts file (for --on-invalid=relabel)")
    p.set_defaults(func=run_restore)

    p = sub.add_parser("check", help="check the indexes, label ids and labels")
    _storage_options(p)
    p.add_argument("--gc", action="store_true", help="drop labels no item uses (daemon stopped)")
    p.set_defaults(func=run_check)

    p = sub.add_parser("relabel", help="restorecon for items, from kv_contexts")
    _storage_options(p)
    p.add_argument("--contexts", type=Path, help="kv_contexts file (default: bundled)")
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--context", help="the acting context (default: this uid's mapping "
                                     "in peer_contexts)")
    p.add_argument("--peer-contexts", type=Path, help="peer_contexts file (default: bundled)")
    p.add_argument("-n", "--dry-run", action="store_true", help="change nothing, show what would")
    p.add_argument("-v", "--verbose", action="store_true", help="print each change")
    p.set_defaults(func=run_relabel)

    p = sub.add_parser("stats", help="a readable summary of a directory or a daemon")
    p.add_argument("address", nargs="?", help="HOST:PORT of a running daemon")
    p.add_argument("-s", "--unix-socket", help="a running daemon's UNIX socket")
    _storage_options(p)
    p.set_defaults(func=run_stats)

    _policy_commands(sub)


def _policy_commands(sub) -> None:
    p = sub.add_parser("policy", help="build the binary policy; explain a denial")
    psub = p.add_subparsers(dest="policy_command", required=True)
    b = psub.add_parser("build", help="compile base + module + site modules")
    b.add_argument("--module", action="append", type=Path, default=[],
                   help="a site module (CIL); may be repeated")
    b.add_argument("--base", type=Path,
                   help="the base policy in CIL instead of the bundled base.cil, e.g. a "
                        "host's full policy (checkpolicy -M -b -C -o ref.cil policy.33)")
    b.add_argument("-o", "--output", type=Path, required=True)
    b.set_defaults(func=run_policy_build)
    w = psub.add_parser("why", help="explain an AVC denial line from the policy")
    w.add_argument("line", help="the AVC line (quoted)")
    w.add_argument("--policy", type=Path, help="binary policy file (default: the embedded one)")
    w.set_defaults(func=run_policy_why)


# ------------------------------------------------------------------ helpers
def _fail(command: str, error) -> int:
    print(f"securecache {command}: {error}", file=sys.stderr)
    return 1


def _open(args, *, readonly: bool):
    from ..security import open_mac
    from ..storage import Storage, StorageError
    mac = open_mac(mode=args.mac, policy=args.policy, booleans=args.booleans,
                   audit=args.audit_log)
    # Storage(readonly=True) opens its sub-databases in a read transaction
    # that it then ends, which leaves their handles unusable; the tools that
    # only read open the environment normally and use read transactions only.
    if readonly and not (Path(args.data_dir) / "data.mdb").is_file():
        raise StorageError(f"{args.data_dir} holds no securecache data")
    storage = Storage(args.data_dir, map_size=args.memory_limit << 20)
    return storage, mac


def _errors():
    from ..security import SecurityError
    from ..storage import StorageError
    from .kvcontexts import KvContextsError
    return (StorageError, SecurityError, KvContextsError, OSError, ValueError)


# ------------------------------------------------------------------ commands
def run_dump(args) -> int:
    """securecache dump."""
    from .dump import dump
    if args.output == "-" and sys.stdout.isatty():
        return _fail("dump", "refusing to write a dump to a terminal: use -o FILE or a pipe")
    try:
        storage, mac = _open(args, readonly=True)
        prefix = args.prefix.encode("utf-8", "surrogateescape")
        if args.output == "-":
            result = dump(storage, sys.stdout.buffer, prefix=prefix, fingerprint=mac.fingerprint)
        else:
            result = _dump_to_file(storage, Path(args.output), prefix, mac.fingerprint)
    except _errors() as error:
        return _fail("dump", error)
    print(f"dump: {result.items:,} items in {result.seconds:.2f} s", file=sys.stderr)
    return 0


def _dump_to_file(storage, path: Path, prefix: bytes, fingerprint: str):
    from .dump import dump
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # a dump holds every item's value: readable by its owner only
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb",
                  buffering=1 << 20) as out:
            result = dump(storage, out, prefix=prefix, fingerprint=fingerprint)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def run_restore(args) -> int:
    """securecache restore."""
    from .dumpfile import DumpError
    from .kvcontexts import KvContexts
    from .restore import InvalidLabelsError, restore
    try:
        storage, mac = _open(args, readonly=False)
        contexts = KvContexts.load(args.contexts, mac) if args.contexts else None
        if args.file == "-":
            result = restore(storage, mac, sys.stdin.buffer, name="<stdin>",
                             on_invalid=args.on_invalid, contexts=contexts)
        else:
            with open(args.file, "rb", buffering=1 << 20) as stream:
                result = restore(storage, mac, stream, name=args.file, seekable=True,
                                 on_invalid=args.on_invalid, contexts=contexts)
    except DumpError as error:
        print(f"securecache restore: {error}; nothing beyond whole verified blocks "
              "was written", file=sys.stderr)
        return 3
    except InvalidLabelsError as error:
        print(f"securecache restore: refused: {error}", file=sys.stderr)
        return 4
    except _errors() as error:
        return _fail("restore", error)
    print(f"restore: {result.read:,} items read, {result.written:,} written, "
          f"{result.unchanged:,} unchanged, {result.expired:,} expired (skipped), "
          f"{result.unlabeled:,} unlabeled, {result.relabeled:,} relabeled, "
          f"{result.refused:,} refused, in {result.seconds:.2f} s", file=sys.stderr)
    for key in result.refused_keys[:20]:
        print(f"restore: refused {key!r}: invalid label and no kv_contexts rule", file=sys.stderr)
    return 4 if result.refused else 0


def run_check(args) -> int:
    """securecache check [--gc]."""
    from .check import DirectoryBusyError, check, collect_garbage
    try:
        storage, mac = _open(args, readonly=not args.gc)
        report = check(storage, mac)
        if args.gc:
            report.collected = collect_garbage(storage)
    except DirectoryBusyError as error:
        return _fail("check", error)
    except _errors() as error:
        return _fail("check", error)
    for line in _check_lines(report):
        print(line)
    return report.exit_code


def _check_lines(report) -> list[str]:
    lines = [f"items: {report.items:,} ({report.expired:,} expired, {report.with_exptime:,} "
             f"with an exptime), key bytes: {report.key_bytes:,}, value bytes: "
             f"{report.value_bytes:,}",
             f"labels: {len(report.labels):,} ({len(report.unused):,} unused"
             + (f", {report.collected:,} collected" if report.collected else "") + ")"]
    for context, count in sorted(report.invalid.items()):
        lines.append(f"invalid label: {context} ({count:,} items)")
    lines += [f"inconsistent: {problem}" for problem in report.problems]
    lines.append(f"check: {'inconsistent' if report.problems else 'invalid labels' if report.invalid else 'ok'}"
                 f" in {report.seconds:.2f} s")
    return lines


def _acting_context(args, mac) -> str:
    if args.context:
        return mac.canonical(args.context)
    contexts = mac.load_peer_contexts(args.peer_contexts)
    context = contexts.for_uid(os.getuid()) or contexts.default
    if context is None:
        raise ValueError(f"peer_contexts maps no context to uid {os.getuid()}: give --context")
    return context


def run_relabel(args) -> int:
    """securecache relabel."""
    from ..security import policybuild
    from .kvcontexts import KvContexts
    from .relabel import Relabeler

    def report(change):
        if change.denied:
            print(change.line(), file=sys.stderr)
        elif args.verbose:
            print(change.line())
    try:
        storage, mac = _open(args, readonly=args.dry_run)
        contexts = KvContexts.load(args.contexts or policybuild.bundled_kv_contexts(), mac)
        acting = _acting_context(args, mac)
        relabeler = Relabeler(storage, mac, contexts, acting, dry_run=args.dry_run,
                              report=report)
        result = relabeler.run(args.prefix.encode("utf-8", "surrogateescape"))
    except _errors() as error:
        return _fail("relabel", error)
    verb = "would relabel" if args.dry_run else "relabeled"
    print(f"relabel: {len(result.changed):,} {verb}, {len(result.denied):,} denied, "
          f"{result.examined:,} items examined as {acting}", file=sys.stderr)
    return 1 if result.denied else 0


def run_stats(args) -> int:
    """securecache stats."""
    from . import stats
    try:
        target = args.unix_socket or args.address
        if target:
            lines = stats.from_daemon(stats.query(target))
        else:
            storage, mac = _open(args, readonly=True)
            lines = stats.from_directory(storage, mac)
    except _errors() as error:
        return _fail("stats", error)
    print("\n".join(lines))
    return 0


def run_policy_build(args) -> int:
    """securecache policy build."""
    from ..security.policybuild import PolicyBuildError, build_policy
    try:
        build_policy(args.module, args.output, base=args.base)
    except PolicyBuildError as error:
        return _fail("policy build", error)
    print(args.output)
    return 0


def run_policy_why(args) -> int:
    """securecache policy why."""
    from ..security import policybuild
    from .why import WhyError, explain
    try:
        print(explain(args.line, args.policy or policybuild.default_policy_path()))
    except (WhyError, policybuild.PolicyBuildError) as error:
        return _fail("policy why", error)
    return 0

