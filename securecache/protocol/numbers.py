"""memcached's number rules for request tokens, shared by the codecs.

How this works: memcached 1.6.18 reads numbers with C's ``strtoul``,
``strtoull``, ``strtol`` and ``strtod`` (its ``safe_strto*`` helpers): a
sign is allowed, the whole token must be the number, and a value beyond
the C type is an error (``ERANGE``). Each function here gives the value
memcached stores, or None where memcached refuses the token; the caller
chooses the error reply. A 32-bit field keeps what ``strtoul`` read mod
2^32, as the C assignment does.

This module imports nothing of ours.
"""

from __future__ import annotations

import re

SIGNED = re.compile(rb"[+-]?[0-9]+\Z")
DECIMAL = re.compile(rb"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
I64 = 1 << 63


def strtoull(token: bytes) -> int | None:
    """An unsigned 64-bit number ("-0" the only negative)."""
    if not SIGNED.match(token):
        return None
    value = int(token)
    return value if 0 <= value <= U64 else None


def uint32(token: bytes) -> int | None:
    """A 32-bit unsigned field (client flags, the verbosity level, ...):
    ``strtoull``'s value kept mod 2^32."""
    value = strtoull(token)
    return None if value is None else value & U32


def int32(token: bytes) -> int | None:
    """A signed 32-bit field read by a 64-bit ``strtol``: wrapped into
    -2^31..2^31-1, as the C assignment does."""
    if not SIGNED.match(token):
        return None
    value = int(token)
    if not -I64 <= value < I64:
        return None
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


def strtod(token: bytes) -> float | None:
    """A decimal number (``1``, ``.5``, ``2.0``, ``1e1``)."""
    return float(token) if DECIMAL.match(token) else None
