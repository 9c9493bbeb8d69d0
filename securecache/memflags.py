"""memcached's command-line flags for ``securecache serve``.

How this works: ``add_memcached_flags`` adds to the serve parser the
memcached flags that mean the same here (``-B -P -R -C -b -o -D -F -X -L``,
``-l ADDR:PORT``), each with its help text and default, and the ones that
cannot apply as ``Refused`` actions: using one stops argument parsing with a
sentence saying why. ``extended`` reads ``-o`` lists; ``listen_addresses``
reads ``-l``. No import of ours: the CLI applies the result.
"""

from __future__ import annotations

import argparse

REFUSED = {
    "-d": "securecache runs in the foreground; run it under systemd or "
          "another supervisor (no -d daemon mode)",
    "-k": "items live in a file-backed LMDB map paged by the kernel; "
          "locking it in memory (-k) does not apply",
    "-r": "set the core file limit with ulimit -c before starting",
    "-W": "the watch command is not served",
    "-e": "items are always persistent in LMDB (--data-dir); no -e "
          "memory file",
    "-f": "there is no slab allocator (items live in LMDB): -f does not apply",
    "-n": "there is no slab allocator (items live in LMDB): -n does not apply",
}

# -o options: name -> (kind, what) where kind is "int" (stored), "flag"
# (accepted, meaning what memcached means) or "refused" (the reason).
EXTENDED = {
    "idle_timeout": ("int", "close connections idle this many seconds"),
    "slab_automove": ("int", "stats settings slab_automove (0, 1 or 2)"),
    "modern": ("flag", "memcached 1.6: currently nothing"),
    "maxconns_fast": ("flag", "a client over -c gets an error and is "
                              "closed at once (always so here)"),
}
REFUSED_EXTENDED = (
    ("ext_", "no extstore: items are on disk in LMDB already"),
    ("ssl_", "TLS is not served"),
    ("hash", "items are in LMDB's B+tree: there is no hash table"),
    ("slab_", "there is no slab allocator"),
    ("lru_", "eviction is oldest-written first, no LRU segments to tune"),
    ("no_lru", "eviction is oldest-written first, no LRU segments to tune"),
    ("hot_", "eviction is oldest-written first, no LRU segments to tune"),
    ("warm_", "eviction is oldest-written first, no LRU segments to tune"),
    ("temporary_ttl", "eviction is oldest-written first, no temporary LRU"),
    ("tail_repair", "there are no slab items to repair"),
    ("watcher_", "the watch command is not served"),
    ("worker_logbuf", "the watch command is not served"),
    ("track_sizes", "values are stored as sent: no item size histogram"),
    ("", "not a memcached option that applies to securecache"),
)


class Refused(argparse.Action):
    """A memcached flag that cannot apply: refused with the reason."""

    def __init__(self, option_strings, dest, nargs=0, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs,
                         default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {REFUSED[self.option_strings[0]]}")


def _char(text: str) -> str:
    if len(text) != 1:
        raise argparse.ArgumentTypeError("-D takes one character")
    return text


def add_memcached_flags(p) -> None:
    """The memcached flags that apply, and the refused ones."""
    p.add_argument("-B", "--protocol", choices=("auto", "ascii", "binary"),
                   default="auto", help="protocol: by the first byte "
                   "(auto), text and meta only (ascii) or binary only")
    p.add_argument("-P", "--pidfile", help="write the daemon's pid to this "
                   "file (removed at a clean stop)")
    p.add_argument("-R", "--max-reqs-per-event", type=int, default=20,
                   help="accepted and shown in stats settings; requests "
                        "that arrive together are answered as one batch")
    p.add_argument("-C", "--disable-cas", action="store_true",
                   help="no CAS: cas values are 0, every cas store EXISTS")
    p.add_argument("-b", "--listen-backlog", type=int, default=1024,
                   help="the listen backlog queue limit")
    p.add_argument("-o", "--extended", action="append",
                   help="comma-separated memcached -o options; these apply: "
                        + "; ".join(f"{name}: {what}" for name, (_, what)
                                    in EXTENDED.items()))
    p.add_argument("-D", "--prefix-delimiter", type=_char,
                   help="delimiter of key prefixes for stats detail; given, "
                        "it also turns stats detail on (default: ':', "
                        "stats detail off)")
    p.add_argument("-F", "--disable-flush-all", action="store_true",
                   help="flush_all is refused for everyone (without it the "
                        "policy's kv_cache:flush decides)")
    p.add_argument("-X", "--disable-dumping", action="store_true",
                   help="stats cachedump and lru_crawler metadump are "
                        "refused (without it they list what kv_item:getattr "
                        "allows)")
    p.add_argument("-L", "--enable-largepages", action="store_true",
                   help="accepted: the LMDB map is the kernel's to page "
                        "(transparent huge pages apply as the host sets "
                        "them); nothing more to do")
    for flag, reason in REFUSED.items():
        p.add_argument(flag, action=Refused, help=f"refused: {reason}")


def extended(values: list[str]) -> dict[str, object]:
    """The -o options as {name: int or True}; ValueError says why not."""
    options: dict[str, object] = {}
    for item in ",".join(values).split(","):
        if not item:
            continue
        name, _, value = item.partition("=")
        kind = EXTENDED.get(name, ("refused",))[0]
        if kind == "refused":
            reason = next(why for prefix, why in REFUSED_EXTENDED
                          if name.startswith(prefix))
            raise ValueError(f"-o {name}: {reason}")
        if kind == "int":
            if not value.isdigit():
                raise ValueError(f"-o {name} needs a number: {name}=N")
            options[name] = int(value)
        else:
            options[name] = True
    if options.get("slab_automove", 0) > 2:
        raise ValueError("-o slab_automove is 0, 1 or 2")
    return options


def listen_addresses(text: str, port: int) -> tuple[list[str], int]:
    """``-l ADDR[:PORT][,...]`` (``[v6]:PORT`` too) as (addresses, port).
    Every listener shares one TCP port: explicit ports must agree."""
    addresses, ports = [], set()
    for part in text.split(","):
        host, explicit = _split_port(part.strip())
        addresses.append(host)
        if explicit is not None:
            ports.add(explicit)
    if len(ports) > 1:
        raise ValueError("-l: every address listens on one TCP port; "
                         "give the same :PORT to all (or use -p)")
    return addresses, ports.pop() if ports else port


def _split_port(part: str) -> tuple[str, int | None]:
    if part.startswith("["):                       # [v6] or [v6]:port
        host, _, rest = part[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if part.count(":") == 1:
        host, _, port = part.partition(":")
        if not port.isdigit():
            raise ValueError(f"-l: not a port: {part}")
        return host, int(port)
    return part, None
