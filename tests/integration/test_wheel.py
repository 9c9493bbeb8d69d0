"""Packaging (issue 8, item 6): `pip install` of the wheel (not editable)
into a fresh venv made from Debian's /usr/bin/python3
--system-site-packages; `securecache serve --data-dir D` then works from
another directory on its embedded default, and so does `--mac off` alone.
The private libsepol and the default policy are built into the per-user
cache directory, never into site-packages; the wheel carries no build
artefact.  One test: it takes a while (a wheel build and a pip install)."""

from __future__ import annotations

import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

from pymemcache.client.base import Client

from .daemons import as_root, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked and new, not ignored): a tree
    without build/, .venv/ or egg-info, as a user's fresh clone."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    archive = dest.with_suffix(".tar")
    with tarfile.open(archive, "w") as tar:
        for name in filter(None, files):
            path = REPO / os.fsdecode(name)
            if path.exists():
                tar.add(path, arcname=os.fsdecode(name), recursive=False)
    with tarfile.open(archive) as tar:
        tar.extractall(dest)
    return dest


def _serve(venv: Path, cwd: Path, env: dict, *args: str) -> str:
    port = free_port()
    log = cwd / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(venv / "bin" / "securecache"), "serve", *as_root(),
                                 "--data-dir", "D",
                                 "-p", str(port), *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=60)
        client = Client(("127.0.0.1", port), timeout=10)
        assert client.set("wheel", b"works")
        assert client.get("wheel") == b"works"
        client.close()
    finally:
        proc.terminate()
        proc.wait(20)
    return log.read_text()


def test_wheel_installs_and_serves_from_another_directory(tmp_path):
    source = _source_copy(tmp_path / "src")
    build = subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "-w",
                            str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert "Deprecat" not in build.stdout + build.stderr
    wheel = next((tmp_path / "dist").glob("securecache-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".policy", ".pyc")) or "build/" in n]
    for package_dir in (REPO / "securecache").rglob("__init__.py"):
        module = package_dir.relative_to(REPO).as_posix()
        assert module in names, f"{module} missing: add its package to pyproject.toml"
    for data in ("securecache/policy/base.cil", "securecache/policy/securecache.cil",
                 "securecache/policy/peer_contexts", "securecache/policy/kv_contexts",
                 "securecache/security/native/scsepol.c"):
        assert data in names

    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECACHE_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    log = _serve(venv, elsewhere, env)
    assert "mac=policy enforcing=True" in log, log
    cache = tmp_path / "cache" / "securecache"
    assert (cache / "native" / "libsecurecache-sepol.so").is_file()
    assert (cache / "policy" / "securecache.policy").is_file()
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not list((site / "securecache").rglob("*.so"))
    assert not list((site / "securecache").rglob("*.policy"))
    log = _serve(venv, elsewhere, env, "--mac", "off")
    assert "mac=off" in log, log
