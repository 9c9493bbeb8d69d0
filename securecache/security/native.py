"""The private libsepol: where it lives, how it is built, its C signatures.

How this works: libsepol.so.2 hides the create computation and the live
policydb, so securecache links its own copy of libsepol from the static
archive (libsepol-dev) with native/scsepol.c into
BUILD/native/libsecurecache-sepol.so, BUILD being <repo>/build in a source
checkout and the per-user cache directory ($XDG_CACHE_HOME/securecache, or
~/.cache/securecache) in an installed package: never site-packages (and
never build/lib, which setuptools packs into wheels).  tools/build-policy
builds it at set-up;
if it is missing or older than its inputs when first needed, it is built
here with the same command (gcc takes a fraction of a second).

`-Wl,-Bsymbolic` makes the library use its own libsepol symbols, and it is
loaded RTLD_LOCAL, so it never mixes state with another libsepol in the
process (setools and libselinux load libsepol.so.2).
"""

import ctypes
import os
import subprocess
import sysconfig
import threading
from pathlib import Path

from .servers import PolicyLoadError

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE = PACKAGE_DIR / "native" / "scsepol.c"
LIB_NAME = "libsecurecache-sepol.so"
_MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
STATIC_LIBSEPOL = Path(os.environ.get(
    "SECURECACHE_LIBSEPOL_A", f"/usr/lib/{_MULTIARCH}/libsepol.a"))

_lock = threading.Lock()
_loaded = None


def user_cache_dir():
    """$XDG_CACHE_HOME/securecache, else ~/.cache/securecache."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "securecache"


def build_dir():
    """The build directory: $SECURECACHE_BUILD_DIR; else <repo>/build in a
    source checkout (pyproject.toml beside the package); else the per-user
    cache directory (an installed package)."""
    env = os.environ.get("SECURECACHE_BUILD_DIR")
    if env:
        return Path(env)
    repo = PACKAGE_DIR.parents[1]
    if (repo / "pyproject.toml").is_file() and (repo / "securecache").is_dir():
        return repo / "build"
    return user_cache_dir()


def library_path():
    """Where the private libsepol is (or will be) built."""
    return build_dir() / "native" / LIB_NAME


def build_command(output):
    """The gcc command line that builds the private libsepol at `output`."""
    return ["gcc", "-O2", "-Wall", "-fPIC", "-shared", "-Wl,-Bsymbolic",
            "-o", str(output), str(SOURCE),
            "-Wl,--whole-archive", str(STATIC_LIBSEPOL), "-Wl,--no-whole-archive"]


def _stale(lib):
    if not lib.exists():
        return True
    built = lib.stat().st_mtime
    inputs = [SOURCE] + ([STATIC_LIBSEPOL] if STATIC_LIBSEPOL.exists() else [])
    return any(p.stat().st_mtime > built for p in inputs)


def build(output=None):
    """Build the private libsepol (atomically) and return its path."""
    output = Path(output or library_path())
    if not STATIC_LIBSEPOL.exists():
        raise PolicyLoadError(
            f"{STATIC_LIBSEPOL} not found: install libsepol-dev (tools/setup)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}")
    try:
        proc = subprocess.run(build_command(tmp), capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise PolicyLoadError("gcc not found: run tools/setup") from exc
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PolicyLoadError(f"building {output} failed:\n{proc.stderr}")
    os.replace(tmp, output)
    return output


def ensure_library():
    """The path of an up-to-date private libsepol, building it if needed."""
    lib = library_path()
    if _stale(lib):
        build(lib)
    return lib


_u32 = ctypes.c_uint32
_p = ctypes.c_void_p
_str = ctypes.c_char_p
_pstr = ctypes.POINTER(ctypes.c_void_p)   # char ** out: keep the address to free it
_psize = ctypes.POINTER(ctypes.c_size_t)


class AvDecision(ctypes.Structure):
    """struct sepol_av_decision."""

    _fields_ = [("allowed", _u32), ("decided", _u32), ("auditallow", _u32),
                ("auditdeny", _u32), ("seqno", _u32)]


# name -> (restype, argtypes); the libsepol calls and scsepol.c's
SIGNATURES = {
    "sepol_debug": (None, [ctypes.c_int]),
    "sepol_context_to_sid": (ctypes.c_int, [_str, ctypes.c_size_t, ctypes.POINTER(_u32)]),
    "sepol_sid_to_context": (ctypes.c_int, [_u32, _pstr, _psize]),
    "sepol_string_to_security_class": (ctypes.c_int, [_str, ctypes.POINTER(ctypes.c_uint16)]),
    "sepol_string_to_av_perm": (ctypes.c_int, [ctypes.c_uint16, _str, ctypes.POINTER(_u32)]),
    "sepol_compute_av": (ctypes.c_int, [_u32, _u32, ctypes.c_uint16, _u32, ctypes.POINTER(AvDecision)]),
    "sepol_transition_sid": (ctypes.c_int, [_u32, _u32, ctypes.c_uint16, ctypes.POINTER(_u32)]),
    "scs_open": (_p, [_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]),
    "scs_select": (None, [_p]),
    "scs_close": (None, [_p]),
    "scs_handle_unknown": (ctypes.c_int, []),
    "scs_mls_enabled": (ctypes.c_int, []),
    "scs_policy_version": (ctypes.c_int, []),
    "scs_permissive": (ctypes.c_int, [_u32]),
    "scs_get_bool": (ctypes.c_int, [_str]),
    "scs_set_bool": (ctypes.c_int, [_str, ctypes.c_int]),
    "scs_bool_count": (ctypes.c_int, []),
    "scs_bool_name": (_str, [_u32]),
    "scs_commit_bools": (ctypes.c_int, []),
    "scs_initial_context": (ctypes.c_int, [_u32, _pstr, _psize]),
    "scs_compute_create": (ctypes.c_int, [_u32, _u32, _u32, _str, _pstr, _psize]),
    "scs_name_rules": (ctypes.c_int, [_u32, _u32, _u32]),
    "scs_sid_insert": (ctypes.c_int, [_str, ctypes.c_size_t, _u32]),
    "scs_sid_remove": (ctypes.c_int, [_u32]),
    "scs_canonical": (ctypes.c_int, [_str, ctypes.c_size_t, _pstr, _psize]),
    "scs_free": (None, [_p]),
}


def load():
    """The private libsepol as a ctypes library (one per process).

    libsepol's security server works on one selected policy at a time:
    callers (sepol.PolicyServer) hold `LOCK` and call scs_select(handle)
    before their other calls.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            path = ensure_library()
            try:
                lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
            except OSError as exc:
                raise PolicyLoadError(f"cannot load {path}: {exc}") from exc
            for name, (restype, argtypes) in SIGNATURES.items():
                func = getattr(lib, name)
                func.restype, func.argtypes = restype, argtypes
            lib.sepol_debug(0)
            _loaded = lib
        return _loaded


# One lock for every call into the private libsepol (not thread-safe; ctypes
# releases the GIL during calls).
LOCK = threading.RLock()


def take_string(lib, ptr):
    """Decode a malloc'ed C string (a c_void_p out value) and free it."""
    try:
        return ctypes.string_at(ptr.value).decode("ascii")
    finally:
        lib.scs_free(ptr.value)


if __name__ == "__main__":
    print(build(library_path()))
