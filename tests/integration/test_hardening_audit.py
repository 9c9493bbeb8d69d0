"""Issue 9: a flood of denials cannot flood the audit log.

Before: 100,000 denied noreply sets wrote 19.8 MB of audit lines in 1.5 s.
Now the audit log lets a burst through, then a bounded rate, counts what it
drops (``stats``: audit_lines, audit_suppressed) and says so in the log.
"""

from __future__ import annotations

import time

from securecache.security.audit import DEFAULT_BURST, DEFAULT_RATE

from .daemons import Daemon, Raw

DENIED = 50_000
FOREIGN = b"system_u:object_r:securecache_app_item_t:s0"   # local_t may not create


def stats(client: Raw) -> dict[bytes, bytes]:
    rows = client.call(b"stats\r\n", b"END\r\n").split(b"\r\n")
    return {row.split()[1]: row.split()[2] for row in rows if row.startswith(b"STAT ")}


def test_denied_noreply_sets_do_not_flood_the_audit_log(tmp_path):
    audit = tmp_path / "audit.log"
    daemon = Daemon(tmp_path, "--audit-log", str(audit), "--durability", "async").start()
    try:
        client = Raw(daemon.port)
        assert client.call(b"createlabel %s\r\n" % FOREIGN) == b"OK\r\n"
        assert client.call(b"set k 0 0 1\r\nx\r\n") == b"CLIENT_ERROR access denied\r\n"
        start = time.monotonic()
        for chunk in range(0, DENIED, 5000):
            client.send(b"".join(b"set k%d 0 0 1 noreply\r\nx\r\n" % i
                                 for i in range(chunk, chunk + 5000)) + b"mn\r\n")
            assert client.read_until(b"MN\r\n", timeout=60) == b"MN\r\n"
        elapsed = time.monotonic() - start
        time.sleep(0.05)                # a token again: the summary, then the line
        assert client.call(b"set last 0 0 1\r\nx\r\n") == b"CLIENT_ERROR access denied\r\n"
        rows = stats(client)
        client.close()
    finally:
        assert daemon.stop() == 0
    written, dropped = int(rows[b"audit_lines"]), int(rows[b"audit_suppressed"])
    assert written + dropped == DENIED + 2
    assert written <= DEFAULT_BURST + DEFAULT_RATE * (elapsed + 1)
    lines = audit.read_text().splitlines()
    avc = [line for line in lines if line.startswith("avc:  denied  { create }")]
    summaries = [line for line in lines if line.startswith("audit: rate limit exceeded: ")]
    assert len(avc) == written and summaries
    assert lines[-1].startswith("avc:  denied  { create }") and 'key="last"' in lines[-1]
    assert sum(int(line.split()[4]) for line in summaries) == dropped
    assert audit.stat().st_size < 1 << 20                # was 19.8 MB per 100k
    print(f"audit: {written} lines in {elapsed:.2f} s ({written / elapsed:.0f}/s), "
          f"{dropped} suppressed")
