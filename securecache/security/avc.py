"""The access vector cache (AVC): every permission check goes through here.

How this works: the first question about (scontext, tcontext, tclass) asks
the security server for the whole access vector and keeps it; every later
question about that triple -- whatever the permission -- is a dict hit and
a bit test.  As libselinux's userspace AVC does:

  * allowed bit set: allow; if the policy says `auditallow`, log "granted";
  * allowed bit clear, enforcing: deny; log "denied" unless `dontaudit`;
  * allowed bit clear, permissive (global --permissive, a host in
    permissive mode, or a `typepermissive` source domain): log "denied ...
    permissive=1" (unless dontaudit) and then set the bit in the cached
    vector, so the denial is logged once per (scontext, tcontext, tclass,
    perm) and then allowed until the next flush (a line the audit rate
    limit drops does not count: that denial is logged at a later try);
  * a permission or class the policy does not define is denied, unless the
    policy says `handleunknown allow`.

A context that is not valid under the loaded policy is checked as the
policy's unlabeled context (as the kernel does with invalidated SIDs): never
"no check".  The cache is flushed on every policy (re)load: the server calls
`flush` through its reload listeners; in kernel mode `poll` asks libselinux
whether the host's policy changed before each check.

Bounded: at most `max_entries` vectors.  A hit marks its entry referenced
(one attribute store); a miss that finds the cache full evicts one entry by
second chance from a random position of the ring of entries (a CLOCK whose
hand jumps): referenced entries met on the way lose their mark and stay.
Unlike LRU or a sweeping CLOCK, this keeps most of a cyclic working set
slightly larger than the cache (read in the same order again and again:
LRU and CLOCK then never hit).

Misses ask the security server WITHOUT holding the AVC's lock (the server
serialises its own calls, and a reload it does calls `flush`, which takes
that lock): a decision is stored only if no flush happened since the
question was asked, so a decision from an old policy never outlives it.
"""

import random
import threading

from .servers import InvalidContextError

DEFAULT_MAX_ENTRIES = 100_000


class _Entry:
    """One cached access vector; `allowed` grows with permissive grants."""

    __slots__ = ("allowed", "auditallow", "auditdeny", "permissive",
                 "scontext", "tcontext", "referenced")

    def __init__(self, decision, scontext, tcontext):
        self.referenced = False        # hit since eviction last looked at it
        self.allowed = decision.allowed
        self.auditallow = decision.auditallow
        self.auditdeny = decision.auditdeny
        self.permissive = decision.permissive
        self.scontext = scontext       # as checked (unlabeled if invalid)
        self.tcontext = tcontext


class AVC:
    """An access vector cache in front of one security server.

    permissive: global permissive mode (log denials once, then allow).
    audit: an audit.AuditLog.
    """

    def __init__(self, server, audit, *, permissive=False,
                 max_entries=DEFAULT_MAX_ENTRIES):
        self.server = server
        self.audit = audit
        self.permissive = permissive
        self.max_entries = max_entries
        self._cache = {}
        self._ring = []                # the cached keys, in slots to evict from
        self._bits = {}
        self._unknown_granted = set()
        self.lookups = self.hits = self.misses = self.denials = 0
        self.evictions = 0
        self._poll = server.poll if server.needs_polling else None
        # Stores and flushes are serialised, and `_flushes` counts flushes: a
        # decision computed under the old policy is never stored after the
        # flush of a reload (the daemon's storage thread and its event loop
        # both ask questions).  The server is never called under this lock.
        self._lock = threading.Lock()
        self._flushes = 0
        self._random = random.Random()
        self._held = threading.local()
        server.add_reload_listener(self.flush)

    # ------------------------------------------------------------ hot path
    def has_perm(self, scontext, tcontext, tclass, perm, *, key=None, audit=True):
        """True if `scontext` may `perm` on `tcontext` of class `tclass`
        (or the denial is not enforced: permissive).  `key` (bytes) goes
        into the audit line.

        audit=False (libselinux's avc_has_perm_noaudit, for listings that
        pass over every item: metadump, flush_all): no audit line, no
        denial counted, and a permissive denial is allowed without being
        marked as logged, so the next audited check still logs it."""
        if self._poll is not None:
            self._poll()
        self.lookups += 1
        entry = self._cache.get((scontext, tcontext, tclass))
        if entry is None:
            self.misses += 1
            entry = self._fill(scontext, tcontext, tclass)
        else:
            self.hits += 1
            entry.referenced = True
        bit = self._bits.get((tclass, perm))
        if bit is None:
            bit = self._bit(tclass, perm)
        if entry.allowed & bit:
            if entry.auditallow & bit and audit:
                self._effect(self.audit.avc, False, (perm,), entry.scontext,
                             entry.tcontext, tclass, key=key)
            return True
        if not audit:
            return self._denied_quietly(entry, bit)
        return self._denied(entry, bit, tclass, perm, key)

    # ------------------------------------------------------------ misses
    def _fill(self, scontext, tcontext, tclass):
        flushes = self._flushes
        source = self._effective(scontext)
        target = self._effective(tcontext)
        entry = _Entry(self.server.compute_av(source, target, tclass), source, target)
        with self._lock:
            if flushes == self._flushes:
                self._store((scontext, tcontext, tclass), entry)
        return entry

    def _store(self, key, entry):
        """Cache `entry` under `key`, evicting one entry if full (under _lock)."""
        if key in self._cache:          # filled meanwhile by another thread
            return
        ring = self._ring
        if len(ring) < self.max_entries:
            ring.append(key)
        else:
            slot = self._victim()
            del self._cache[ring[slot]]
            ring[slot] = key
            self.evictions += 1
        self._cache[key] = entry

    def _victim(self):
        """The slot to reuse: second chance from random positions."""
        cache, ring, pick = self._cache, self._ring, self._random.randrange
        while True:
            slot = pick(len(ring))
            entry = cache[ring[slot]]
            if not entry.referenced:
                return slot
            entry.referenced = False

    def _effective(self, ctx):
        if self.server.check_context(ctx):
            return ctx
        unlabeled = self.server.unlabeled_context
        if not self.server.check_context(unlabeled):
            raise InvalidContextError(f"neither {ctx!r} nor the unlabeled context is valid")
        return unlabeled

    def _bit(self, tclass, perm):
        flushes = self._flushes
        bit = self.server.perm_bit(tclass, perm)
        if bit is None:
            # Not in the policy: a pseudo-bit no policy vector has, allowed
            # only by `handleunknown allow` (see _denied).
            bit = 0
        with self._lock:
            if flushes == self._flushes:
                self._bits[(tclass, perm)] = bit
        return bit

    def _denied(self, entry, bit, tclass, perm, key):
        if bit == 0:
            return self._unknown(entry, tclass, perm, key)
        permissive = self._permissive_for(entry)
        self._effect(self._record_denial, entry, bit, tclass, perm, key,
                     permissive)
        return permissive

    def _record_denial(self, entry, bit, tclass, perm, key, permissive):
        if permissive and entry.allowed & bit:
            return               # granted meanwhile: logged once already
        self.denials += 1
        logged = True
        if entry.auditdeny & bit:
            logged = self.audit.avc(True, (perm,), entry.scontext, entry.tcontext,
                                    tclass, key=key, permissive=permissive)
        if permissive and logged:       # a line the rate limit dropped: log again
            entry.allowed |= bit

    def _denied_quietly(self, entry, bit):
        if bit == 0 and self.server.allows_unknown:
            return True
        return self._permissive_for(entry)

    def _unknown(self, entry, tclass, perm, key):
        if self.server.allows_unknown:
            return True
        token = (entry.scontext, entry.tcontext, tclass, perm)
        if token in self._unknown_granted:
            return True
        permissive = self._permissive_for(entry)
        self._effect(self._record_unknown, entry, token, key, permissive)
        return permissive

    def _record_unknown(self, entry, token, key, permissive):
        if permissive and token in self._unknown_granted:
            return
        self.denials += 1
        logged = self.audit.avc(True, (token[3],), entry.scontext,
                                entry.tcontext, token[2], key=key,
                                permissive=permissive)
        if permissive and logged:
            self._unknown_granted.add(token)

    # ------------------------------------------------- held side effects
    def hold(self):
        """Hold this thread's audit lines and denial counts from now on:
        a transaction that may be aborted and run again must not log or
        count its decisions twice (see take/replay)."""
        self._held.effects = []

    def take(self):
        """Stop holding; the held side effects (to ``replay`` after the
        transaction commits, or to drop)."""
        held = getattr(self._held, "effects", None)
        self._held.effects = None
        return held or []

    def replay(self, held):
        """Carry out side effects that ``take`` returned."""
        for function, args, fields in held:
            function(*args, **fields)

    def _effect(self, function, *args, **fields):
        held = getattr(self._held, "effects", None)
        if held is None:
            function(*args, **fields)
        else:
            held.append((function, args, fields))

    def _permissive_for(self, entry):
        return self.permissive or entry.permissive or not self.server.host_enforcing

    # ------------------------------------------------------------ admin
    @property
    def enforcing(self):
        """False when denials are only logged (global or host permissive)."""
        return not self.permissive and self.server.host_enforcing

    def flush(self):
        """Forget every cached decision (after a policy change)."""
        with self._lock:
            self._flushes += 1
            self._cache.clear()
            self._ring.clear()
            self._bits.clear()
            self._unknown_granted.clear()

    def stats(self):
        """The counters, named as in `stats`."""
        return {"avc_lookups": self.lookups, "avc_hits": self.hits,
                "avc_misses": self.misses, "avc_denials": self.denials,
                "avc_entries": len(self._cache), "avc_evictions": self.evictions}

    def reset_stats(self):
        """Zero the counters (`stats reset`)."""
        self.lookups = self.hits = self.misses = self.denials = 0
        self.evictions = 0
