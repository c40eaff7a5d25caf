"""Fixtures of the security tests: analysis servers (tests/server_testkit.py's, on the session's
redis-server) and certificates made here (a CA, a server certificate for 127.0.0.1 and localhost,
a client certificate)."""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture
def make_server(make_server):
    """tests/conftest.py's factory with a 2 s enhancement timeout: fuzzed image requests wait for it."""
    return functools.partial(make_server, enhancement_timeout_s=2.0)


# -- certificates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate clients and the server trust
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool, sans=(), client: bool = False):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        names = [x509.IPAddress(ipaddress.ip_address(s)) if s[0].isdigit() else x509.DNSName(s) for s in sans]
        if names:
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> Path:
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _certificate("facecodec test CA", ca_key, "facecodec test CA", ca_key, ca=True)
    other = _certificate("unrelated CA", other_key, "unrelated CA", other_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _certificate("analysis server", server_key, "facecodec test CA", ca_key, ca=False,
                          sans=("127.0.0.1", "localhost"))
    client = _certificate("cam-1", client_key, "facecodec test CA", ca_key, ca=False, client=True)
    return Pki(ca=_write(d / "ca.pem", ca), server_cert=_write(d / "server.pem", server),
               server_key=_write(d / "server.key", key=server_key), client_cert=_write(d / "client.pem", client),
               client_key=_write(d / "client.key", key=client_key), other_ca=_write(d / "other-ca.pem", other))
