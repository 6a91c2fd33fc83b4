"""TLS for the xDS port: the server certificate, and the CA that client certificates must chain
to (mutual TLS), read from files and read again whenever they change.

gRPC asks for the certificate configuration before every TLS handshake; the files are checked
(a ``stat`` each) and re-read only when one changed, so cert-manager's rotation (an atomic swap of
the mounted Secret) takes effect on the next connection. Connections already open keep the
session they negotiated: a rotation drops no stream. Files that do not make a valid set (a key
that does not match the certificate, a half-written file) are not taken; the last good set keeps
serving until the files are right again.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

# As istiod: xDS over TLS on 15012, plaintext on 15010.
TLS_PORT = 15012
PLAINTEXT_PORT = 15010


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate chain and key, and the CA bundle for client certificates (None:
    TLS without client certificates)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        extra = () if self.client_ca_file is None else (self.client_ca_file,)
        return (self.cert_file, self.key_file, *extra)


class TlsFilesError(Exception):
    """The files are missing or do not make a valid certificate set."""


Stamp = tuple[tuple[int, int, int, int], ...]


def _stamp(paths: tuple[Path, ...]) -> Stamp:
    """What changes when a file is replaced or rewritten (through symlinks, as a mounted Secret
    is)."""
    stamps = []
    for path in paths:
        info = os.stat(path)
        stamps.append((info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def _read(files: TlsFiles) -> tuple[bytes, bytes, bytes | None]:
    """The files' contents, checked: the key matches the certificate, the CA bundle parses."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert_file, files.key_file)
        cert = files.cert_file.read_bytes()
        key = files.key_file.read_bytes()
        ca = None
        if files.client_ca_file is not None:
            ca = files.client_ca_file.read_bytes()
            context.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
    except (OSError, ssl.SSLError, ValueError) as err:
        raise TlsFilesError(f"{', '.join(map(str, files.paths))}: {err}") from err
    return cert, key, ca


class ReloadingCertificates:
    """The server's certificate configuration, read again from ``files`` when they change.

    ``fetch`` is gRPC's certificate configuration fetcher: it runs in gRPC's own threads, before
    each handshake.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp: Stamp | None = None
        self._failed: Stamp | None = None
        self.reloads = 0
        self.initial = self._load()

    def _load(self) -> grpc.ServerCertificateConfiguration:
        """Read the files once they hold still; ``TlsFilesError`` when they are not valid."""
        for _ in range(3):
            try:
                before = _stamp(self.files.paths)
            except OSError as err:
                raise TlsFilesError(str(err)) from err
            cert, key, ca = _read(self.files)
            try:
                after = _stamp(self.files.paths)
            except OSError as err:
                raise TlsFilesError(str(err)) from err
            if before == after:
                self._stamp = after
                return grpc.ssl_server_certificate_configuration([(key, cert)], ca)
        raise TlsFilesError("the files kept changing while they were read")

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and are valid; None to keep the current
        one."""
        with self._lock:
            try:
                stamp = _stamp(self.files.paths)
            except OSError as err:
                if self._failed is None:
                    log.error("TLS files unreadable, keeping the last good certificate: %s", err)
                    self._failed = ()
                return None
            if stamp in (self._stamp, self._failed):
                return None
            try:
                config = self._load()
            except TlsFilesError as err:
                log.error("TLS files not taken, keeping the last good certificate: %s", err)
                self._failed = stamp
                return None
            self._failed = None
            self.reloads += 1
            log.info(
                "TLS files changed: new connections get the new certificate",
                extra={"files": [str(p) for p in self.files.paths]},
            )
            return config


def server_credentials(
    files: TlsFiles,
) -> tuple[grpc.ServerCredentials, ReloadingCertificates]:
    """Server credentials that re-read ``files`` when they change; client certificates are
    required when ``files`` name a client CA. ``TlsFilesError`` when the files are not valid."""
    certificates = ReloadingCertificates(files)
    credentials = grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,  # type: ignore[arg-type]  # None means "keep the current one"
        require_client_authentication=files.client_ca_file is not None,
    )
    return credentials, certificates


class ReloadingSslContext:
    """An ``ssl`` server context for ``files`` (HTTPS), made again when they change: checked on
    each handshake, like the xDS port's. A client certificate is asked for and verified against
    the client CA when one is sent; a client without one still connects (it may authenticate
    otherwise)."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp = _stamp(files.paths)
        self._failed: Stamp | None = None
        self.context = self._context()
        self._current = self.context
        self.reloads = 0

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.files.cert_file, self.files.key_file)
            if self.files.client_ca_file is not None:
                context.load_verify_locations(cafile=self.files.client_ca_file)
                context.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as err:
            raise TlsFilesError(f"{', '.join(map(str, self.files.paths))}: {err}") from err
        context.sni_callback = self._on_hello
        return context

    def _on_hello(self, sock: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        """Before each handshake: hand the connection the context of the current files."""
        with self._lock:
            try:
                stamp = _stamp(self.files.paths)
                if stamp not in (self._stamp, self._failed):
                    self._current = self._context()
                    self._stamp, self._failed = stamp, None
                    self.reloads += 1
                    log.info("TLS files changed: new HTTPS connections get the new certificate")
            except (OSError, TlsFilesError) as err:
                self._failed = stamp if isinstance(err, TlsFilesError) else self._failed
                log.error("TLS files not taken, keeping the last good certificate: %s", err)
            current = self._current
        if current is not self.context:
            sock.context = current


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address to bind) is on the loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
