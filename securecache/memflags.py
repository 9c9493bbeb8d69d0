"""memcached's command-line flags for ``securecache serve``.

How this works: ``add_memcached_flags`` adds to the serve parser the
memcached flags that mean the same here (``-B -P -R -C -b -o -D -F -X -W -L
-u -Z``, ``-l ADDR:PORT``, and the TLS files), each with its help text and
default, and the ones that
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
    "lru_crawler": ("flag", "the periodic sweep of expired items on (the "
                            "default; lru_crawler enable|disable at run "
                            "time)"),
    "no_lru_crawler": ("flag", "that sweep off, as memcached's crawler"),
    "lru_crawler_sleep": ("int", "stats settings lru_crawler_sleep (up to "
                                 "1000000)"),
    "lru_crawler_tocrawl": ("int", "stats settings lru_crawler_tocrawl"),
    "modern": ("flag", "memcached 1.6: currently nothing"),
    "maxconns_fast": ("flag", "a client over -c gets an error and is "
                              "closed at once (always so here)"),
    "ssl_chain_cert": ("str", "the TLS certificate chain, PEM (--tls-cert)"),
    "ssl_key": ("str", "its private key, PEM, unless in the chain file "
                       "(--tls-key)"),
    "ssl_ca_cert": ("str", "the CAs of client certificates, PEM "
                           "(--tls-ca)"),
    "ssl_verify_mode": ("int", "client certificates: 0 none, 1 request, "
                               "2 require, 3 once (= require) "
                               "(--tls-verify)"),
    "ssl_ciphers": ("str", "OpenSSL cipher list for TLS 1.2 "
                           "(--tls-ciphers)"),
    "ssl_min_version": ("int", "lowest TLS version: 2 (TLS 1.2, the "
                               "default) or 3 (TLS 1.3)"),
    "ssl_session_cache": ("flag", "TLS session resumption: OpenSSL's "
                                  "server-side cache is always on here"),
}
REFUSED_EXTENDED = (
    ("ext_", "no extstore: items are on disk in LMDB already"),
    ("ssl_keyformat", "keys are read as PEM; convert another format with "
                      "`openssl pkey`"),
    ("ssl_wbuf_size", "the event loop's TLS transport sizes its own "
                      "buffers"),
    ("ssl_kernel_tls", "TLS runs in the process (Python's ssl module), "
                       "not offloaded to the kernel"),
    ("ssl_", "not a TLS option of securecache (see --tls-*)"),
    ("hash", "items are in LMDB's B+tree: there is no hash table"),
    ("slab_", "there is no slab allocator"),
    ("lru_", "eviction is oldest-written first, no LRU segments to tune"),
    ("no_lru", "eviction is oldest-written first, no LRU segments to tune"),
    ("hot_", "eviction is oldest-written first, no LRU segments to tune"),
    ("warm_", "eviction is oldest-written first, no LRU segments to tune"),
    ("temporary_ttl", "eviction is oldest-written first, no temporary LRU"),
    ("tail_repair", "there are no slab items to repair"),
    ("watcher_", "watch streams have no per-watcher buffers to size here"),
    ("worker_logbuf", "watch lines are written at once, not through worker log buffers"),
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
    p.add_argument("-W", "--disable-watch", action="store_true",
                   help="the watch command is refused for everyone (without "
                        "it kv_cache:getattr decides)")
    p.add_argument("-L", "--enable-largepages", action="store_true",
                   help="accepted: the LMDB map is the kernel's to page "
                        "(transparent huge pages apply as the host sets "
                        "them); nothing more to do")
    p.add_argument("-u", "--user", help="when started as root: the user to "
                   "become once the listeners are bound and the data "
                   "directory is open (as memcached, root refuses to run "
                   "without it; -u root keeps root)")
    _tls_flags(p)
    for flag, reason in REFUSED.items():
        p.add_argument(flag, action=Refused, help=f"refused: {reason}")


def _tls_flags(p) -> None:
    p.add_argument("-Z", "--enable-ssl", action="store_true",
                   help="TLS on every TCP listener (the UNIX socket stays "
                        "plain, as in memcached); needs --tls-cert")
    p.add_argument("--tls-cert", metavar="FILE", help="certificate chain, PEM (-o "
                   "ssl_chain_cert=FILE)")
    p.add_argument("--tls-key", metavar="FILE", help="private key, PEM (-o ssl_key=FILE; "
                   "default: in the --tls-cert file)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificates that sign client "
                   "certificates, PEM (-o ssl_ca_cert=FILE)")
    p.add_argument("--tls-verify", choices=("none", "request", "require"),
                   help="client certificates: none asked for, requested "
                        "(verified when sent) or required (-o "
                        "ssl_verify_mode=0|1|2|3; default: none)")
    p.add_argument("--tls-ciphers", metavar="LIST", help="OpenSSL cipher list for TLS 1.2 "
                   "(-o ssl_ciphers=LIST; default: OpenSSL's)")


def extended(values: list[str]) -> dict[str, object]:
    """The -o options as {name: int, str or True}; ValueError says why
    not."""
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
        options[name] = _value(name, kind, value)
    for name, highest in (("slab_automove", 2), ("ssl_verify_mode", 3),
                          ("ssl_min_version", 3),
                          ("lru_crawler_sleep", 1_000_000)):
        if options.get(name, 0) > highest:
            raise ValueError(f"-o {name} is 0 to {highest}")
    if options.get("ssl_min_version", 2) < 2:
        raise ValueError("-o ssl_min_version: TLS 1.0 and 1.1 are not "
                         "served (2: TLS 1.2, 3: TLS 1.3)")
    return options


def _value(name: str, kind: str, value: str) -> object:
    if kind == "int":
        if not value.isdigit():
            raise ValueError(f"-o {name} needs a number: {name}=N")
        return int(value)
    if kind == "str":
        if not value:
            raise ValueError(f"-o {name} needs a value: {name}=VALUE")
        return value
    return True


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
