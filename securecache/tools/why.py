"""``securecache policy why 'AVC LINE'``: why was this denied?

How this works: the AVC line's permissions, scontext, tcontext and tclass
are handed to libselinux's audit2why analyser (``selinux.audit2why``,
python3-selinux), which works from a binary policy file without SELinux
in the kernel and names the cause: a missing TE allow rule, a boolean
that would allow it, a constraint (its text), RBAC, or type bounds.  It is
an explanation only: decisions are the security server's.  Booleans are
as the policy file has them (a --booleans file is not applied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AVC = re.compile(r"avc:\s+(?P<verdict>denied|granted)\s+\{(?P<perms>[^}]*)\}.*?"
                 r"scontext=(?P<scontext>\S+)\s+tcontext=(?P<tcontext>\S+)\s+"
                 r"tclass=(?P<tclass>\S+)")


class WhyError(Exception):
    """The line is not an AVC line, or the policy cannot be analysed."""


@dataclass(frozen=True)
class Denial:
    """The parts of an AVC line that matter for an explanation."""

    perms: tuple[str, ...]
    scontext: str
    tcontext: str
    tclass: str


def parse_avc(line: str) -> Denial:
    """Parse a kernel-format AVC line (ours or the kernel's)."""
    match = AVC.search(line)
    if match is None:
        raise WhyError("not an AVC line: expected 'avc:  denied  { PERM } for ... "
                       "scontext=... tcontext=... tclass=...'")
    return Denial(tuple(match["perms"].split()), match["scontext"], match["tcontext"],
                  match["tclass"])


def _te_rule(denial: Denial, _data) -> str:
    source, target = denial.scontext.split(":")[2], denial.tcontext.split(":")[2]
    return ("Missing type enforcement (TE) allow rule.\n"
            f"  Add to a site module: (allow {source} {target} "
            f"({denial.tclass} ({' '.join(denial.perms)})))")


def _boolean(_denial: Denial, data) -> str:
    lines = ["A boolean is set so that this is denied. Allow it with:"]
    lines += [f"  {name}={'true' if value else 'false'}   (in the --booleans file, then SIGHUP)"
              for name, value in data]
    return "\n".join(lines)


def _constraint(_denial: Denial, data) -> str:
    return "A constraint denies it (MCS/MLS levels or a type rule):\n  " + \
        str(data).strip().replace("\n", "\n  ")


def _explanations(a2w) -> dict:
    return {
        a2w.ALLOW: lambda d, _x: "Allowed by the loaded policy (nothing to explain).",
        a2w.DONTAUDIT: lambda d, _x: "Denied and not audited (a dontaudit rule).",
        a2w.TERULE: _te_rule,
        a2w.BOOLEAN: _boolean,
        a2w.CONSTRAINT: _constraint,
        a2w.RBAC: lambda d, _x: "Missing role allow rule (RBAC): the role may not use this type.",
        a2w.BOUNDS: lambda d, _x: "A typebounds rule limits the source domain.",
    }


def explain(line: str, policy_path) -> str:
    """A human explanation of the AVC ``line`` under the binary policy file."""
    denial = parse_avc(line)
    try:
        import selinux.audit2why as a2w
    except ImportError as exc:
        raise WhyError("python3-selinux is not importable (run tools/setup)") from exc
    try:
        a2w.init(str(policy_path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise WhyError(f"cannot load {policy_path}: {exc}") from exc
    try:
        reason, data = a2w.analyze(denial.scontext, denial.tcontext, denial.tclass,
                                   list(denial.perms))
    except (OSError, ValueError, RuntimeError) as exc:
        raise WhyError(f"cannot analyse the line: {exc}") from exc
    finally:
        a2w.finish()
    text = _explanations(a2w).get(reason)
    if text is None:
        raise WhyError(f"the analyser cannot use this line (code {reason}): check the "
                       "contexts and class against the policy")
    head = (f"{denial.scontext} -> {denial.tcontext} {denial.tclass} "
            f"{{ {' '.join(denial.perms)} }}")
    return f"{head}\n  {text(denial, data)}"
