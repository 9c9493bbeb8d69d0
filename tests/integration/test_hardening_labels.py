"""Issue 9, defect 2: distinct labels never wedge or slow the daemon.

Before the fix the SID table of the security server was rebuilt at 20,000
contexts from inside the AVC's miss path, whose lock the rebuild's flush
then waited for: about 20,000 distinct ``createlabel`` contexts (no
permission needed) or items carrying 20,000 distinct MCS category sets,
read back, deadlocked the daemon for good (SIGTERM ignored), and each new
context had cost ~1 ms on the way.  Now SIDs are freed and reused (a
bounded table, no rebuild) and a connection may set at most
MAX_CREATELABELS distinct create labels.
"""

from __future__ import annotations

import signal
import time

import pytest

from securecache.engine.access import MAX_CREATELABELS

from .daemons import Daemon, Raw

LABELS = 100_000
PER_CONNECTION = 200
CLIENT = "system_u:system_r:securecache_local_t:s0-s0:c0.c1023"
TOO_MANY = b"CLIENT_ERROR too many distinct create labels on this connection\r\n"


def item_label(i: int) -> bytes:
    """The i-th of 1024*1024 distinct category sets (one or two categories)."""
    high, low = divmod(i, 1024)
    cats = b"c%d" % low if high == low else b"c%d,c%d" % (min(high, low), max(high, low))
    return b"system_u:object_r:securecache_local_item_t:s0:" + cats


@pytest.fixture
def daemon(tmp_path):
    peer_contexts = tmp_path / "peer_contexts"
    peer_contexts.write_text(f"net 127.0.0.0/8 {CLIENT}\n")
    daemon = Daemon(tmp_path, "--peer-contexts", str(peer_contexts),
                    "--audit-log", str(tmp_path / "audit.log"),
                    "--durability", "async").start()
    yield daemon
    daemon.kill()


def distinct_labels(count: int) -> list[bytes]:
    labels, seen, i = [], set(), 0
    while len(labels) < count:          # (a, b) and (b, a) are the same set
        label = item_label(i)
        if label not in seen:
            seen.add(label)
            labels.append(label)
        i += 1
    return labels


def round_trip(port: int) -> float:
    probe = Raw(port)
    try:
        start = time.monotonic()
        assert probe.call(b"mn\r\n") == b"MN\r\n"
        return time.monotonic() - start
    finally:
        probe.close()


def still_serves(daemon: Daemon) -> None:
    other = Raw(daemon.port)
    try:
        assert other.call(b"set after 0 0 2\r\nok\r\n", ) == b"STORED\r\n"
        assert other.call(b"get after\r\n", b"END\r\n") == b"VALUE after 0 2\r\nok\r\nEND\r\n"
    finally:
        other.close()


def stops_on_sigterm(daemon: Daemon) -> None:
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(20) == 0, daemon.log()


def test_items_with_100000_distinct_category_sets_are_read_back(daemon):
    labels = distinct_labels(LABELS)
    slowest = 0.0
    for start in range(0, LABELS, PER_CONNECTION):
        chunk = labels[start:start + PER_CONNECTION]
        client = Raw(daemon.port)
        client.send(b"".join(b"createlabel %s\r\nset k%d 0 0 1 noreply\r\nx\r\n"
                             % (label, start + n) for n, label in enumerate(chunk))
                    + b"mn\r\n")
        replies = client.read_until(b"MN\r\n", timeout=60)
        client.close()
        assert replies == b"OK\r\n" * len(chunk) + b"MN\r\n", replies[-300:]
        if start % 10_000 == 0:
            slowest = max(slowest, round_trip(daemon.port))
    reader = Raw(daemon.port)
    for start in range(0, LABELS, 1000):
        keys = range(start, min(LABELS, start + 1000))
        reader.send(b"".join(b"mg k%d v\r\n" % i for i in keys) + b"mn\r\n")
        replies = reader.read_until(b"MN\r\n", timeout=60)
        assert replies == b"VA 1\r\nx\r\n" * len(keys) + b"MN\r\n", replies[:300]
        if start % 10_000 == 0:
            slowest = max(slowest, round_trip(daemon.port))
    assert reader.call(b"getlabel k99999\r\n") == b"LABEL %s\r\n" % labels[-1]
    reader.close()
    assert slowest < 2.0          # another client is answered meanwhile
    still_serves(daemon)
    stops_on_sigterm(daemon)


def test_a_createlabel_flood_is_bounded_per_connection(daemon):
    flood = Raw(daemon.port)
    labels = distinct_labels(20_000)
    flood.send(b"".join(b"createlabel %s\r\n" % label for label in labels)
               + b"set mine 0 0 1\r\nx\r\n")
    replies = flood.read_until(b"STORED\r\n", timeout=60)
    assert replies == (b"OK\r\n" * MAX_CREATELABELS
                       + TOO_MANY * (len(labels) - MAX_CREATELABELS) + b"STORED\r\n")
    # the last accepted label is still the connection's; old ones stay usable
    assert flood.call(b"getlabel mine\r\n") == b"LABEL %s\r\n" % labels[MAX_CREATELABELS - 1]
    assert flood.call(b"createlabel %s\r\n" % labels[0]) == b"OK\r\n"
    assert flood.call(b"createlabel default\r\n") == b"OK\r\n"
    flood.close()
    still_serves(daemon)
    stops_on_sigterm(daemon)


def test_a_createlabel_flood_over_many_connections_never_wedges(daemon):
    """The issue's shape spread over connections so that every context is
    accepted: 30,000 distinct contexts, then a set from another client."""
    labels = distinct_labels(30_000)
    for start in range(0, len(labels), MAX_CREATELABELS):
        chunk = labels[start:start + MAX_CREATELABELS]
        flood = Raw(daemon.port)
        flood.send(b"".join(b"createlabel %s\r\n" % label for label in chunk) + b"mn\r\n")
        assert flood.read_until(b"MN\r\n", timeout=60) == b"OK\r\n" * len(chunk) + b"MN\r\n"
        flood.close()
    assert round_trip(daemon.port) < 2.0
    still_serves(daemon)
    stops_on_sigterm(daemon)
