"""A test PKI made with Debian's `openssl` command (tools/setup installs
it): a CA, a server certificate for 127.0.0.1, client certificates with
chosen subjects, and a second CA that the daemon does not trust. EC P-256
keys: each takes a few milliseconds to make."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_EXT = ("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "extendedKeyUsage=serverAuth\n")
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True,
                   timeout=60)


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, PEM files."""

    cert: Path
    key: Path


def make_ca(directory: Path, name: str) -> Pair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl("req", "-x509", *KEY, "-keyout", str(pair.key), "-out",
             str(pair.cert), "-days", "2", "-subj", f"/CN={name}")
    return pair


def issue(ca: Pair, directory: Path, name: str, subject: str,
          server: bool = False) -> Pair:
    """A certificate for ``subject`` (``/O=acme/CN=batch-42``) signed by
    ``ca``: for a server (127.0.0.1) or a client."""
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text(SERVER_EXT if server else CLIENT_EXT)
    _openssl("req", *KEY, "-keyout", str(pair.key), "-out", str(csr),
             "-subj", subject)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey",
             str(ca.key), "-CAcreateserial", "-out", str(pair.cert), "-days",
             "2", "-extfile", str(ext))
    return pair


@dataclass(frozen=True)
class PKI:
    ca: Pair
    server: Pair
    batch: Pair             # /O=acme/OU=batch/CN=batch-42
    other: Pair             # /O=acme/CN=web-7
    stranger: Pair          # /CN=batch-42, signed by a CA the daemon lacks


def make_pki(directory: Path) -> PKI:
    ca = make_ca(directory, "ca")
    rogue = make_ca(directory, "rogue-ca")
    return PKI(ca=ca,
               server=issue(ca, directory, "server", "/CN=localhost",
                            server=True),
               batch=issue(ca, directory, "batch", "/O=acme/OU=batch/CN=batch-42"),
               other=issue(ca, directory, "other", "/O=acme/CN=web-7"),
               stranger=issue(rogue, directory, "stranger", "/CN=batch-42"))


def client_context(pki: PKI, pair: Pair | None = None) -> ssl.SSLContext:
    """A client context that verifies the daemon against the test CA and
    presents ``pair`` when given."""
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if pair is not None:
        context.load_cert_chain(str(pair.cert), str(pair.key))
    return context
