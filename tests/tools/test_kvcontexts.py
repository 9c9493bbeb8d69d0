"""kv_contexts: parsed once, the most specific pattern wins."""

import pytest

from securecache.security import open_mac, policybuild
from securecache.tools.kvcontexts import KvContexts, KvContextsError, compile_pattern

A = "system_u:object_r:securecache_item_t:s0"
B = "system_u:object_r:securecache_app_item_t:s0"
C = "system_u:object_r:securecache_local_item_t:s0"

RULES = f"""
# comment
*            {A}
app:*        {B}
app:*:x      {C}     # more literal characters than app:*
app:?        {C}
ap*          {C}
lock:*       <<none>>
a[!b]c       {C}
q\\*         {B}
"""


@pytest.fixture()
def rules():
    return KvContexts.parse(RULES, "t")


@pytest.mark.parametrize("key, context", [
    (b"zzz", A), (b"app:1", C), (b"app:12", B), (b"app:12:x", C),
    (b"apple", C), (b"lock:1", None), (b"axc", C), (b"abc", A),
    (b"q*", B), (b"qq", A),
])
def test_most_specific_wins(rules, key, context):
    assert rules.context_for(key) == context


def test_last_line_wins_a_tie():
    text = f"app:* {A}\napp:* {B}\n"
    assert KvContexts.parse(text).context_for(b"app:1") == B


def test_no_rule_leaves_the_key_alone():
    assert KvContexts.parse(f"app:* {A}\n").context_for(b"other") is None


def test_patterns_cover_whole_keys_and_any_byte():
    regex, prefix, literals = compile_pattern("a*b")
    assert (prefix, literals) == (1, 2)
    assert regex.fullmatch(b"a\nxb") and not regex.fullmatch(b"a-b-")


@pytest.mark.parametrize("text, message", [
    ("onlyone\n", "t:1: expected PATTERN CONTEXT, got 1 fields"),
    (f"\n[ab {A}\n", "t:2: unterminated ["),
    ("x notacontext\n", "t:1: not a security context"),
])
def test_malformed_lines_are_named(text, message):
    with pytest.raises(KvContextsError, match=message.replace("[", r"\[")):
        KvContexts.parse(text, "t")


def test_bundled_file_is_valid_under_the_default_policy(test_policy):
    mac = open_mac("policy", policy=test_policy, audit="none")
    rules = KvContexts.load(policybuild.bundled_kv_contexts(), mac)
    assert rules.context_for(b"app:tenant1:x").endswith(":s0:c1")
    assert rules.context_for(b"lock:1") is None


def test_contexts_invalid_under_the_policy_are_refused(test_policy):
    mac = open_mac("policy", policy=test_policy, audit="none")
    with pytest.raises(KvContextsError, match="t:1: context .* not valid"):
        KvContexts.parse("* system_u:object_r:no_such_t:s0\n", "t", mac)
