"""Real daemon processes for the integration tests: securecache and memcached."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SECURECACHE = Path(sys.executable).parent / "securecache"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_root(flags=()) -> list[str]:
    """``-u root`` when the tests run as root and ``flags`` name no user:
    serve, as memcached, refuses to run as root without -u."""
    return ["-u", "root"] if os.geteuid() == 0 and "-u" not in flags else []


def wait_for_port(port: int, process: subprocess.Popen, timeout=20.0,
                  host="127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"daemon did not listen on {port}")


class Daemon:
    """A securecache serve process on 127.0.0.1, restartable on one directory."""

    def __init__(self, tmp: Path, *extra: str, port: int | None = None) -> None:
        self.data_dir = tmp / "data"
        self.socket_path = str(tmp / "sc.sock")
        self.log_path = tmp / "daemon.log"
        self.extra = list(extra)
        self.port = port or free_port()
        self.port_chosen = port is None
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [str(SECURECACHE), "serve", "--data-dir", str(self.data_dir),
                "-l", "127.0.0.1", "-p", str(self.port),
                "-s", self.socket_path, *as_root(self.extra), *self.extra]

    def start(self) -> "Daemon":
        for attempt in range(3):
            self._log_start = self.log_path.stat().st_size \
                if self.log_path.exists() else 0
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(self.command(), stdout=log,
                                            stderr=subprocess.STDOUT)
            log.close()
            try:
                wait_for_port(self.port, self.process)
                break
            except RuntimeError:
                # another process took the free port we picked: pick again
                if not (self.port_chosen and "cannot listen" in self.log()
                        and attempt < 2):
                    raise
                self.port = free_port()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout=20.0) -> None:
        """Our process logged "ready" (its listeners are open): the port
        that answered is ours. (Our VERSION says 1.6.18, as memcached's.)"""
        deadline = time.monotonic() + timeout
        while "ready" not in self.log()[self._log_start:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"port {self.port} is not ours: "
                                   f"{self.log()[-500:]}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, signum=signal.SIGTERM) -> int:
        """A clean stop; the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signum)
        return self.process.wait(20)

    def restart(self, kill=True) -> "Daemon":
        self.kill() if kill else self.stop()
        return self.start()

    def signal(self, signum) -> None:
        self.process.send_signal(signum)


class Memcached:
    """Debian's memcached on a free loopback port, for comparisons."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                *extra]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


class Raw:
    """A raw text-protocol client: exact bytes in, exact bytes out."""

    def __init__(self, port: int, host="127.0.0.1", source: str | None = None,
                 unix: str | None = None) -> None:
        if unix:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(unix)
        else:
            self.sock = socket.socket()
            if source:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        self.sock.settimeout(5)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, end: bytes, timeout=5.0) -> bytes:
        data = b""
        self.sock.settimeout(timeout)
        while not data.endswith(end):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def read_through(self, marker: bytes, timeout=10.0) -> bytes:
        """Read until ``marker`` has arrived and a line has ended after it."""
        data = b""
        self.sock.settimeout(timeout)
        while marker not in data or not data.endswith(b"\r\n"):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def call(self, data: bytes, end: bytes = b"\r\n") -> bytes:
        self.send(data)
        return self.read_until(end)

    def read_all(self, quiet=0.3) -> bytes:
        """Everything until the peer is quiet for ``quiet`` s, or closes."""
        data = b""
        self.sock.settimeout(quiet)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data + b"<closed>"
                data += chunk
        except socket.timeout:
            return data
        except ConnectionResetError:
            return data + b"<closed>"

    def close(self) -> None:
        self.sock.close()
