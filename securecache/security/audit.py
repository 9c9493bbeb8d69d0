"""Audit: kernel-format AVC lines and where they go.

How this works: `format_avc` is the ONE function that turns a decision into
an AVC line, exactly as the kernel writes one:

    avc:  denied  { read } for  pid=42 comm="securecache" key="k1"
        scontext=... tcontext=... tclass=kv_item permissive=0

(one line; `granted` lines, written for `auditallow` rules, carry no
permissive= field, as the kernel's).  Untrusted strings (the item key, comm)
are written as the kernel's audit_log_untrustedstring writes them: quoted,
or -- when they contain a space, a double quote, a control or a non-ASCII
byte -- as upper-case hex without quotes.  The standard tools read these
lines as they are: `audit2allow -p POLICY -i FILE`, `audit2why`.

An AuditLog sends lines to a sink: "stderr" (default), "syslog"
(LOG_AUTHPRIV, ident securecache), "none", or a file path (appended to,
reopened by `reopen()`, e.g. on SIGHUP after log rotation).

Rate limit (the kernel's printk_ratelimit and audit rate_limit are the
models): a token bucket lets a burst of DEFAULT_BURST lines through, then
DEFAULT_RATE lines per second; lines beyond are not even formatted, only
counted (`suppressed`).  The first line written after some were dropped is
preceded by one summary line, as printk's "callbacks suppressed":

    audit: rate limit exceeded: 1234 AVC lines suppressed (rate=200/s burst=500)

audit2allow and audit2why skip it (it is not an AVC record).  Any client
that can be denied could otherwise fill the disk: 100,000 denied noreply
sets wrote 19.8 MB in 1.5 s.
"""

import os
import sys
import syslog
import threading
import time

COMM = "securecache"


def untrusted(value):
    """Encode an untrusted string (str or bytes) as the kernel's audit does."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if any(b < 0x21 or b > 0x7E or b == 0x22 for b in raw):
        return raw.hex().upper()
    return f'"{raw.decode("ascii")}"'


def format_avc(denied, perms, scontext, tcontext, tclass, *, key=None,
               pid=None, comm=COMM, permissive=False):
    """One kernel-format AVC line (no trailing newline).

    denied: True for a denial, False for a granted (auditallow) line.
    perms: iterable of permission names.  key: the item key (bytes/str) or
    None.  permissive: the denial was not enforced (permissive=1).
    """
    verdict = "denied" if denied else "granted"
    fields = [f"pid={os.getpid() if pid is None else pid}", f"comm={untrusted(comm)}"]
    if key is not None:
        fields.append(f"key={untrusted(key)}")
    fields += [f"scontext={scontext}", f"tcontext={tcontext}", f"tclass={tclass}"]
    if denied:
        fields.append(f"permissive={1 if permissive else 0}")
    return f"avc:  {verdict}  {{ {' '.join(perms)} }} for  {' '.join(fields)}"


class _StderrSink:
    def write(self, line):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def reopen(self):
        pass

    def close(self):
        pass


class _SyslogSink:
    def __init__(self):
        syslog.openlog(COMM, syslog.LOG_PID, syslog.LOG_AUTHPRIV)

    def write(self, line):
        syslog.syslog(syslog.LOG_NOTICE, line)

    def reopen(self):
        pass

    def close(self):
        syslog.closelog()


class _NullSink:
    def write(self, line):
        pass

    def reopen(self):
        pass

    def close(self):
        pass


class _FileSink:
    def __init__(self, path):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", buffering=1, encoding="ascii")

    def write(self, line):
        with self._lock:
            self._file.write(line + "\n")

    def reopen(self):
        with self._lock:
            self._file.close()
            self._file = open(self.path, "a", buffering=1, encoding="ascii")

    def close(self):
        with self._lock:
            self._file.close()


class RateLimit:
    """A token bucket: `burst` events at once, then `rate` per second
    (rate 0: no limit).  Not locked: the AuditLog holds its lock."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, max(burst, 1), clock
        self.tokens = float(self.burst)
        self.stamp = clock()

    def allow(self):
        """True if one more event may pass now (and take its token)."""
        if not self.rate:
            return True
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


SINKS = {"stderr": _StderrSink, "syslog": _SyslogSink, "none": _NullSink}


def open_sink(spec):
    """A sink for "stderr", "syslog", "none" or a file path."""
    spec = os.fspath(spec) if spec is not None else "stderr"
    factory = SINKS.get(spec)
    return factory() if factory else _FileSink(spec)


DEFAULT_RATE = 200          # AVC lines per second, after the burst
DEFAULT_BURST = 500         # lines let through at once


def suppressed_line(count, rate, burst):
    """The summary written when `count` lines were dropped."""
    return (f"audit: rate limit exceeded: {count} AVC lines suppressed "
            f"(rate={rate}/s burst={burst})")


class AuditLog:
    """Writes AVC lines (see format_avc) to one sink, rate-limited; counts
    the lines written (`lines`) and those suppressed (`suppressed`).

    rate, burst: the token bucket (see the module docstring); rate=0 writes
    every line."""

    def __init__(self, sink="stderr", *, rate=DEFAULT_RATE, burst=DEFAULT_BURST,
                 clock=time.monotonic):
        self.sink = open_sink(sink)
        self.limit = RateLimit(rate, burst, clock)
        self.lines = 0
        self.suppressed = 0
        self._pending = 0           # suppressed since the last summary
        self._lock = threading.Lock()

    def avc(self, denied, perms, scontext, tcontext, tclass, **fields):
        """Format one AVC line with format_avc and write it, unless the
        rate limit drops it (then it is only counted).  True if written."""
        with self._lock:
            if not self.limit.allow():
                self.suppressed += 1
                self._pending += 1
                return False
            self._summary()
            self.sink.write(format_avc(denied, perms, scontext, tcontext, tclass, **fields))
            self.lines += 1
            return True

    def _summary(self):
        if self._pending:
            self.sink.write(suppressed_line(self._pending, self.limit.rate, self.limit.burst))
            self._pending = 0

    def flush_summary(self):
        """Write the summary of lines dropped since the last one, if any."""
        with self._lock:
            self._summary()

    def stats(self):
        """The counters, named as in `stats`."""
        return {"audit_lines": self.lines, "audit_suppressed": self.suppressed}

    def reset_stats(self):
        """Zero the counters (`stats reset`)."""
        self.lines = self.suppressed = 0

    def reopen(self):
        """Reopen a file sink (log rotation)."""
        self.flush_summary()
        self.sink.reopen()

    def close(self):
        self.flush_summary()
        self.sink.close()
