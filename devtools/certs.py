"""A throw-away certificate authority for TLS tests and benchmarks, made with the openssl command line.

:func:`make_test_ca` writes a CA, a broker certificate for 127.0.0.1 and a client certificate into a directory and
returns what :class:`devtools.brokers.MosquittoBroker` and the clients need. Never for a site: certificates there
come from the city's CA (docs/broker.md).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from devtools.brokers import BrokerTls
from gateway.mqtt.connection import TlsOptions

__all__ = ["make_test_ca"]


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "the openssl command is not installed (Debian: openssl)"
        raise RuntimeError(msg)
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"openssl {args[0]} failed: {result.stderr.strip()}"
        raise RuntimeError(msg)


def make_test_ca(where: Path, *, days: int = 2) -> tuple[BrokerTls, TlsOptions]:
    """A CA, the broker's certificate (subjectAltName IP:127.0.0.1) and a client certificate (RSA 2048), all in
    ``where``: the broker's files, and the client's (the CA to check the broker with, the client certificate)."""
    where.mkdir(parents=True, exist_ok=True)
    ca_key, ca = where / "ca.key", where / "ca.crt"
    valid = str(days)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", valid, "-subj", "/CN=cribwatch test CA")  # fmt: skip
    for name, extension in (("broker", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        key, csr, crt, ext = (where / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
        ext.write_text(extension + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
                 "-days", valid, "-out", str(crt), "-extfile", str(ext))  # fmt: skip
    return (
        BrokerTls(ca, where / "broker.crt", where / "broker.key"),
        TlsOptions(str(ca), str(where / "client.crt"), str(where / "client.key")),
    )
