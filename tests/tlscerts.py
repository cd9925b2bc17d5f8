"""A self-signed certificate for 127.0.0.1, made with the ``openssl`` command line.

(The ``cryptography`` package is not a dependency of syncd; ``openssl`` is on
every machine the tests run on. Tests that need a certificate skip without it.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def self_signed(directory: Path, name: str = "vendor") -> tuple[Path, Path]:
    """(certificate, private key) as PEM files: CN and subjectAltName 127.0.0.1, 1 day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([openssl, *request, *files], check=True, capture_output=True)
    return cert, key
