"""TLS on the TCP listeners (``-Z``), memcached's semantics.

How this works: ``settings`` reads the TLS flags (``--tls-cert``,
``--tls-key``, ``--tls-ca``, ``--tls-verify``, ``--tls-ciphers``) and
memcached's ``-o ssl_*`` options into one ``TLSSettings`` (a named flag
wins over its ``-o`` twin) and says why when they cannot serve. ``TLS``
holds the one ``ssl.SSLContext`` that every TCP listener hands to
``loop.create_server(..., ssl=...)``: the certificate chain and key are
read at start, while the daemon is still root (key files are often
root's only). The UNIX socket is never TLS, as in memcached.

Client certificates follow memcached's ``ssl_verify_mode``: 0 ``none``
(none asked for), 1 ``request`` (asked for; one that is sent must verify
against the CA file), 2 ``require`` and 3 ``once`` (a client without a
verified certificate fails the handshake; ``once`` is memcached's
"verify at the first handshake only", and Python's TLS never
renegotiates, so it is ``require``). The verified certificate's subject
identifies the client through ``cert`` lines of ``peer_contexts``
(``security.peer``).

``TLS.reload`` (SIGHUP, memcached's ``refresh_certs``) loads the files
into a scratch context first and, when they load, into the live one:
connections from then on get the new certificate, open ones keep theirs,
and a bad file leaves the old certificate serving.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl

log = logging.getLogger("securecache")

VERIFY_MODES = {"none": ssl.CERT_NONE, "request": ssl.CERT_OPTIONAL,
                "require": ssl.CERT_REQUIRED}
MEMCACHED_VERIFY = {0: "none", 1: "request", 2: "require", 3: "require"}
MIN_VERSIONS = {2: ssl.TLSVersion.TLSv1_2, 3: ssl.TLSVersion.TLSv1_3}
HANDSHAKE_TIMEOUT = 10.0   # seconds a client has to finish the handshake
VERIFY_NUMBERS = {"none": 0, "request": 1, "require": 2}

# (named flag attribute, -o option) pairs that mean the same
TWINS = (("tls_cert", "ssl_chain_cert"), ("tls_key", "ssl_key"),
         ("tls_ca", "ssl_ca_cert"), ("tls_ciphers", "ssl_ciphers"))


class TLSError(ValueError):
    """A certificate, key or CA file cannot be loaded; says which."""


@dataclasses.dataclass(frozen=True)
class TLSSettings:
    """What the TCP listeners' TLS needs."""

    cert: str
    key: str
    ca: str | None = None
    verify: str = "none"               # none | request | require
    ciphers: str | None = None         # OpenSSL cipher list (TLS 1.2)
    min_version: int = 2               # memcached's ssl_min_version


def settings(args, options: dict) -> tuple[TLSSettings | None, str | None]:
    """(settings or None without -Z, None) or (None, why not). Reads
    ``args.enable_ssl``, the ``--tls-*`` flags and ``options`` (-o)."""
    values = {flag: getattr(args, flag) or options.get(option)
              for flag, option in TWINS}
    mode = options.get("ssl_verify_mode")
    verify = args.tls_verify or (MEMCACHED_VERIFY[mode] if mode is not None
                                 else None)
    given = any(values.values()) or verify or "ssl_min_version" in options
    if not args.enable_ssl:
        if given:
            return None, ("TLS options given without -Z (--enable-ssl): the "
                          "TCP listeners would not be TLS")
        return None, None
    if not args.port:
        return None, "ERROR: You cannot enable SSL without a TCP port."
    if not values["tls_cert"]:
        return None, ("-Z needs a certificate chain: --tls-cert FILE (or "
                      "-o ssl_chain_cert=FILE)")
    verify = verify or "none"
    if verify != "none" and not values["tls_ca"]:
        return None, (f"--tls-verify {verify} needs --tls-ca FILE (or -o "
                      "ssl_ca_cert=FILE): the CAs whose client "
                      "certificates are accepted")
    return TLSSettings(cert=values["tls_cert"],
                       key=values["tls_key"] or values["tls_cert"],
                       ca=values["tls_ca"], verify=verify,
                       ciphers=values["tls_ciphers"],
                       min_version=options.get("ssl_min_version", 2)), None


def settings_rows(config: TLSSettings | None) -> list[tuple[str, object]]:
    """memcached's ``stats settings`` rows for TLS."""
    if config is None:
        return [("ssl_enabled", "no"), ("ssl_chain_cert", "(null)"),
                ("ssl_key", "(null)"), ("ssl_verify_mode", 0),
                ("ssl_ciphers", "NULL"), ("ssl_ca_cert", "NULL"),
                ("ssl_min_version", "tlsv1.2")]
    return [("ssl_enabled", "yes"), ("ssl_chain_cert", config.cert),
            ("ssl_key", config.key),
            ("ssl_verify_mode", VERIFY_NUMBERS[config.verify]),
            ("ssl_ciphers", config.ciphers or "NULL"),
            ("ssl_ca_cert", config.ca or "NULL"),
            ("ssl_min_version", f"tlsv1.{config.min_version}")]


def _context(config: TLSSettings) -> ssl.SSLContext:
    """A server context from ``config``; TLSError says which file failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[config.min_version]
    _load(context, config)
    context.verify_mode = VERIFY_MODES[config.verify]
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError as error:
            raise TLSError(f"TLS ciphers {config.ciphers!r}: {error}") \
                from None
    return context


def _load(context: ssl.SSLContext, config: TLSSettings) -> None:
    try:
        context.load_cert_chain(config.cert, config.key)
    except (OSError, ssl.SSLError) as error:     # SSLError is an OSError
        raise TLSError(f"cannot load the TLS certificate {config.cert} "
                       f"with key {config.key}: {error}") from None
    if config.ca:
        try:
            context.load_verify_locations(cafile=config.ca)
        except (OSError, ssl.SSLError) as error:
            raise TLSError(f"cannot load the TLS CA file {config.ca}: "
                           f"{error}") from None


class TLS:
    """The listeners' TLS context and its reload (see module doc)."""

    def __init__(self, config: TLSSettings) -> None:
        self.config = config
        self.context = _context(config)

    def reload(self) -> bool:
        """Read the certificate, key and CA files again (SIGHUP); False,
        logged, when they do not load (the old certificate keeps
        serving). CAs removed from the file stay trusted until a
        restart: OpenSSL only adds to a context's trust store."""
        try:
            _context(self.config)               # all of it loads, or nothing
            _load(self.context, self.config)
        except TLSError as error:
            log.error("TLS certificate reload failed, keeping the old "
                      "one: %s", error)
            return False
        log.info("SIGHUP: reloaded the TLS certificate %s", self.config.cert)
        return True

    def describe(self) -> str:
        """For the start log: the certificate and the client-cert mode."""
        return (f"TLS certificate {self.config.cert}, client certificates: "
                f"{self.config.verify}")
