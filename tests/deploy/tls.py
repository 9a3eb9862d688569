"""Throwaway TLS material for the deployment tests: a CA and a server certificate it signed,
for ``localhost`` and ``127.0.0.1``, made with the ``openssl`` command (always present where
Python's ssl module is). EC P-256 keys: quick to generate."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "client_context", "make_tls"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server certificate (PEM)
    key: Path  # its private key (PEM, unencrypted)


SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def _openssl(*args: str | Path, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    result = subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")


def make_tls(directory: Path) -> TlsFiles:
    """Write ca.pem, server.pem and server.key into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Switchyard test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
             cwd=directory)
    (directory / "server.ext").write_text(SERVER_EXTENSIONS, encoding="ascii")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=directory,
    )
    return TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    """A verifying client context that trusts only the throwaway CA (hostname checked)."""
    return ssl.create_default_context(cafile=str(tls.ca))
