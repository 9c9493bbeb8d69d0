"""``securecache stats``: a readable summary for an operator.

From a data directory (one read transaction; labels with their item
counts) or from a running daemon over TCP or its UNIX socket (the
``stats`` command: items, bytes, connections, hit rates, AVC hit rate).
"""

from __future__ import annotations

import socket

from .check import check


def from_directory(storage, mac=None) -> list[str]:
    """Summary lines of a data directory."""
    report = check(storage, mac)
    with storage.txn(write=False) as txn:
        usage = storage.usage(txn)
    lines = [f"items          {report.items:,} ({report.expired:,} expired, not yet swept)",
             f"bytes          {report.key_bytes + report.value_bytes:,} in keys and values, "
             f"{usage:,} in LMDB pages",
             f"labels         {len(report.labels):,} ({len(report.unused)} unused)"]
    for label_id, count in sorted(report.label_items.items(), key=lambda kv: -kv[1]):
        context = report.labels.get(label_id, b"<unresolved id %d>" % label_id)
        text = context.decode("ascii", "replace")
        mark = "  (invalid under the policy)" if text in report.invalid else ""
        lines.append(f"  {count:>12,}  {text}{mark}")
    return lines


def query(address: str) -> dict[str, str]:
    """``stats`` of a daemon at HOST:PORT or a UNIX socket path."""
    if ":" in address and not address.startswith("/"):
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        sock.connect(address)
    data = b""
    with sock:
        sock.sendall(b"stats\r\n")
        while not (data.endswith(b"END\r\n") or data.endswith(b"ERROR\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.endswith(b"END\r\n"):
        raise ConnectionError(f"stats refused by {address}: {data.strip().decode(errors='replace')}")
    stats = {}
    for line in data.decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    return stats


def _ratio(hits: str | None, total: int) -> str:
    return f"{int(hits) / total:.1%}" if hits is not None and total else "-"


def from_daemon(stats: dict[str, str]) -> list[str]:
    """Summary lines of a daemon's ``stats``."""
    get = stats.get
    gets = int(get("get_hits", 0)) + int(get("get_misses", 0))
    lookups = int(get("avc_lookups", 0))
    return [f"version        {get('version', '?')}  (up {get('uptime', '?')} s, pid {get('pid', '?')})",
            f"items          {int(get('curr_items', 0)):,}",
            f"bytes          {int(get('bytes', 0)):,} of {int(get('limit_maxbytes', 0)):,}",
            f"connections    {get('curr_connections', '?')} open, {get('total_connections', '?')} total",
            f"get hit rate   {_ratio(get('get_hits'), gets)} of {gets:,} gets",
            f"mac            {get('mac_mode', '?')}, enforcing={get('enforcing', '?')}",
            f"avc hit rate   {_ratio(get('avc_hits'), lookups)} of {lookups:,} lookups, "
            f"{get('avc_denials', '0')} denials"]
