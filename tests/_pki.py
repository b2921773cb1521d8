"""A throwaway trustme PKI as files on disk, for the TLS tests.

`make_pki` creates a CA, a server certificate and a client certificate in a new folder; the
`Pki` it returns names the files and can swap in new certificates the way operators are told
to (write beside, rename over), which is what the rotation tests rely on.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import attrs
import trustme
from cryptography import x509

DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")


def replace_file(path: Path, data: bytes) -> None:
    """Write a temp file and rename it over ``path``, as the README tells operators to.

    Readers see the old or the new file, never half of one. The rename also gives the file a
    new inode, so the change is seen even if it lands in the same coarse mtime tick with the
    same size.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_leaf(leaf: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    """Replace ``key_path`` and ``cert_path`` (the full chain) with ``leaf``'s."""
    replace_file(key_path, leaf.private_key_pem.bytes())
    replace_file(cert_path, b"".join(pem.bytes() for pem in leaf.cert_chain_pems))


def leaf_serial(leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


@attrs.frozen
class Pki:
    """One CA and the server/client certificates it issued, as files in `dir`.

    `server_leaf` is the server certificate `make_pki` issued; a test that installs another
    one keeps it as the "before" to compare with.
    """

    ca: trustme.CA
    dir: Path
    server_leaf: trustme.LeafCert

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def install_server_cert(self, leaf: trustme.LeafCert) -> None:
        write_leaf(leaf, self.server_cert, self.server_key)

    def install_client_cert(self, leaf: trustme.LeafCert) -> None:
        write_leaf(leaf, self.client_cert, self.client_key)

    def client_context(self, *, cert: bool = True) -> ssl.SSLContext:
        """A verifying client trusting this CA, presenting this CA's client cert if `cert`."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx

    def server_flags(self) -> list[str]:
        """Proxy command line: TLS listener with mutual TLS against this CA."""
        return [
            "--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key),
            "--tls-ca", str(self.ca_file), "--ssl-require-peer-certs",
        ]  # fmt: skip

    def client_flags(self, *, verify: bool = True) -> list[str]:
        """Proxy command line: client certificate for upstream TLS, verifying against this CA."""
        flags = ["--pem-cert-path", str(self.client_cert), "--pem-key-path", str(self.client_key)]
        if verify:
            flags += ["--pem-ca-path", str(self.ca_file), "--ssl-verify-peers"]
        return flags


def make_pki(directory: Path, *server_names: str) -> Pki:
    """A new CA in the new folder `directory`, with its certificate in `ca_file`.

    The server certificate is for `server_names` (default: localhost and 127.0.0.1), the client
    certificate for client.example.
    """
    directory.mkdir()
    ca = trustme.CA()
    pki = Pki(ca, directory, ca.issue_cert(*(server_names or DEFAULT_SERVER_NAMES)))
    ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.install_server_cert(pki.server_leaf)
    pki.install_client_cert(ca.issue_cert("client.example"))
    return pki
