"""kv_contexts: which label an item should have, by key (parsed once, here).

How this works: each ``PATTERN CONTEXT`` line (see policy/kv_contexts) is
compiled to a bytes regular expression over the whole key.  The rules are
kept sorted most specific first -- the longest literal prefix (characters
before the first wildcard), then the most literal characters, then the
later line -- so ``lookup`` returns the first rule whose pattern matches,
exactly the file_contexts rule.  CONTEXT is a context (checked against the
loaded policy and stored canonical when a MAC is given) or ``<<none>>``:
matching items are left alone.  ``relabel`` and ``restore
--on-invalid=relabel`` both use this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..security.servers import context_syntax_ok

NONE = "<<none>>"
WILDCARDS = b"*?["


class KvContextsError(ValueError):
    """A kv_contexts file is malformed; the message names the line."""


@dataclass(frozen=True)
class KvRule:
    """One line: the pattern, its context (None for <<none>>), where."""

    pattern: str
    context: str | None
    lineno: int
    prefix: int            # literal characters before the first wildcard
    literals: int          # literal characters overall
    regex: re.Pattern

    def matches(self, key: bytes) -> bool:
        """True if the whole key matches the pattern."""
        return self.regex.fullmatch(key) is not None


def _bracket(raw: bytes, i: int, where: str) -> tuple[bytes, int]:
    """The regex of a ``[seq]``/``[!seq]`` class starting at raw[i]."""
    j = i + 1
    negate = raw[j:j + 1] == b"!"
    j += negate
    body = bytearray()
    if raw[j:j + 1] == b"]":          # a leading ] is literal, as in fnmatch
        body += b"\\]"
        j += 1
    while j < len(raw) and raw[j:j + 1] != b"]":
        char = raw[j:j + 1]
        if char == b"\\" and j + 1 < len(raw):
            j += 1
            char = raw[j:j + 1]
        body += char if char == b"-" else re.escape(char)
        j += 1
    if j >= len(raw):
        raise KvContextsError(f"{where}: unterminated [ in pattern")
    return b"[" + (b"^" if negate else b"") + bytes(body) + b"]", j + 1


def compile_pattern(pattern: str, where: str = "<pattern>") -> tuple[re.Pattern, int, int]:
    """(regex, literal prefix length, literal count) of a glob pattern."""
    raw = pattern.encode("utf-8", "surrogateescape")
    out, i, literals, prefix, wild = bytearray(), 0, 0, 0, False
    while i < len(raw):
        char = raw[i:i + 1]
        if char == b"\\":
            if i + 1 >= len(raw):
                raise KvContextsError(f"{where}: pattern ends with \\")
            out += re.escape(raw[i + 1:i + 2])
            i += 2
        elif char in (b"*", b"?"):
            out += b".*" if char == b"*" else b"."
            wild, i = True, i + 1
            continue
        elif char == b"[":
            regex, i = _bracket(raw, i, where)
            out += regex
            wild = True
            continue
        else:
            out += re.escape(char)
            i += 1
        literals += 1
        prefix += not wild
    return re.compile(bytes(out), re.DOTALL), prefix, literals


class KvContexts:
    """A parsed kv_contexts file: ``lookup(key)`` gives the rule that wins."""

    def __init__(self, rules: list[KvRule], source: str = "<kv_contexts>") -> None:
        self.source = source
        self.rules = sorted(rules, key=lambda r: (r.prefix, r.literals, r.lineno),
                            reverse=True)

    @classmethod
    def parse(cls, text: str, source: str = "<kv_contexts>", mac=None) -> "KvContexts":
        """Parse kv_contexts text; with a MAC every context must be valid
        under its policy (and is kept canonical).  KvContextsError names
        the line of the first problem."""
        rules = []
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{source}:{lineno}"
            if len(fields) != 2:
                raise KvContextsError(f"{where}: expected PATTERN CONTEXT, got {len(fields)} fields")
            pattern, context = fields
            regex, prefix, literals = compile_pattern(pattern, where)
            rules.append(KvRule(pattern, _context(context, where, mac), lineno,
                                prefix, literals, regex))
        return cls(rules, source)

    @classmethod
    def load(cls, path, mac=None) -> "KvContexts":
        """Parse the file at ``path`` (see parse)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KvContextsError(f"cannot read kv_contexts {path}: {exc}") from None
        return cls.parse(text, str(path), mac)

    def lookup(self, key: bytes) -> KvRule | None:
        """The most specific rule matching ``key``, or None."""
        for rule in self.rules:
            if rule.regex.fullmatch(key) is not None:
                return rule
        return None

    def context_for(self, key: bytes) -> str | None:
        """The context ``key`` should have; None: leave it as it is."""
        rule = self.lookup(key)
        return None if rule is None else rule.context


def _context(context: str, where: str, mac) -> str | None:
    if context == NONE:
        return None
    if not context_syntax_ok(context):
        raise KvContextsError(f"{where}: not a security context: {context!r}")
    if mac is None:
        return context
    if not mac.check_context(context):
        raise KvContextsError(f"{where}: context {context} is not valid under the loaded policy")
    return mac.canonical(context)
