"""Building binary policies from policy/ with secilc; the bundled files.

How this works: a binary policy for `--mac=policy` is

    secilc -M true -f /dev/null -o OUT base.cil securecache.cil [SITE.cil ...]

(base.cil and securecache.cil from the policy directory, site modules
after them).  With `base=FILE` (`policy build --base`), FILE -- e.g. a
host's whole policy converted to CIL -- takes the place of base.cil.
secilc takes milliseconds, so the embedded default policy
(`default_policy_path`) is simply rebuilt whenever it is missing or older
than its sources: into BUILD/policy/ (tools/build-policy does it at
set-up), or, when that is not writable, into the per-user cache directory.

The policy directory is $SECURECACHE_POLICY_DIR; else the package's own
copy (securecache/policy/, package data of an installed wheel, mapped from
the repository's policy/ at build time); else <repo>/policy.  BUILD is
native.build_dir(): $SECURECACHE_BUILD_DIR, <repo>/build in a checkout, the
per-user cache directory in an installed package.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import native
from .servers import PolicyLoadError

DEFAULT_POLICY_NAME = "securecache.policy"
BASE_MODULES = ("base.cil", "securecache.cil")
TEST_MODULE = Path("test") / "securecache-test.cil"


class PolicyBuildError(PolicyLoadError):
    """secilc failed; the message carries its diagnostics."""


def policy_dir():
    """The directory of the CIL sources and the bundled context files."""
    env = os.environ.get("SECURECACHE_POLICY_DIR")
    if env:
        return Path(env)
    packaged = native.PACKAGE_DIR.parent / "policy"
    if (packaged / BASE_MODULES[0]).is_file():
        return packaged
    return native.PACKAGE_DIR.parents[1] / "policy"


def bundled_peer_contexts():
    """The bundled peer_contexts file (policy/peer_contexts)."""
    return policy_dir() / "peer_contexts"


def bundled_kv_contexts():
    """The bundled kv_contexts file (policy/kv_contexts)."""
    return policy_dir() / "kv_contexts"


def test_module():
    """The site module of the scenario/test policy (policy/test/)."""
    return policy_dir() / TEST_MODULE


def secilc_path():
    """The secilc executable, or PolicyBuildError if it is not installed."""
    path = shutil.which("secilc")
    if path is None:
        raise PolicyBuildError("secilc not found: install the secilc package (tools/setup)")
    return path


def build_policy(modules, output, base_dir=None, *, policyvers=None, base=None):
    """Compile base.cil + securecache.cil (from `base_dir`, default the
    policy directory) + `modules` into the binary policy `output`.  `base`:
    a CIL file used instead of base.cil (a host's full policy).

    The output is replaced atomically.  Returns `output` as a Path.  Raises
    PolicyBuildError with secilc's diagnostics on failure.
    """
    sources = secilc_sources(modules, base_dir, base=base)
    for source in sources:
        if not source.is_file():
            raise PolicyBuildError(f"policy source not found: {source}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    command = [secilc_path(), "-M", "true", "-f", os.devnull, "-o", tmp]
    if policyvers:
        command += ["-c", str(policyvers)]
    proc = subprocess.run(command + [str(s) for s in sources], capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        names = " ".join(s.name for s in sources)
        detail = (proc.stderr or proc.stdout).strip()
        raise PolicyBuildError(f"secilc failed to compile {names}:\n{detail}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, output)
    return output


def secilc_sources(modules, base_dir=None, *, base=None):
    """The CIL files, in order, that build_policy hands to secilc."""
    base_dir = Path(base_dir) if base_dir else policy_dir()
    first = Path(base) if base else base_dir / BASE_MODULES[0]
    return [first, base_dir / BASE_MODULES[1]] + [Path(m) for m in modules]


def _sources(base_dir):
    return [base_dir / name for name in BASE_MODULES]


def _fresh(output, sources):
    if not output.exists():
        return False
    built = output.stat().st_mtime
    return all(s.stat().st_mtime <= built for s in sources)


def default_policy_path():
    """The embedded default binary policy (base + securecache module),
    rebuilt first if missing or stale.  Returns its Path."""
    sources = _sources(policy_dir())
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise PolicyBuildError("policy sources not found: " + ", ".join(missing)
                               + " (set SECURECACHE_POLICY_DIR)")
    candidates = [native.build_dir() / "policy" / DEFAULT_POLICY_NAME,
                  native.user_cache_dir() / DEFAULT_POLICY_NAME]
    for output in candidates:
        if _fresh(output, sources):
            return output
    errors = []
    for output in candidates:
        try:
            return build_policy([], output)
        except OSError as exc:
            errors.append(f"{output}: {exc}")
    raise PolicyBuildError("cannot write the default policy: " + "; ".join(errors))
