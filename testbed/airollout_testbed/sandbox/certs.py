"""Certificates for the sandbox apiserver: one CA, a serving cert for loopback, an admin client cert.

Admin is a member of system:masters (bound to cluster-admin by the bootstrap RBAC policy), so the sandbox
runs with RBAC on, as a real cluster does, and tests can mint less privileged identities beside it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(directory: Path) -> None:
    """Write ca, apiserver, admin and service-account key material into ``directory`` (idempotent)."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "admin.crt").exists():
        return
    days = "3650"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", days, "-keyout", "ca.key",
             "-out", "ca.crt", "-subj", "/CN=airollout-sandbox-ca", cwd=directory)  # fmt: skip
    (directory / "apiserver.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n"
    )
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
        ("admin", "/O=system:masters/CN=sandbox-admin", "client.ext"),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", days, "-out", f"{name}.crt", "-extfile", ext, cwd=directory)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
