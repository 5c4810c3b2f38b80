"""Which certificate authorities an inbox may trust besides the system store: a PEM file in the configured
CA directory (``IMAP_CA_DIR``), or a PEM the admin uploaded (stored with the inbox).

A CA file path is typed by whoever may edit an inbox and read by the web and worker processes. Answered
file by file ("no such file", "not a valid PEM certificate"), it would tell which files exist on the server
and whether they are readable. So only files inside the CA directory are ever opened, after resolving
``..`` and symlinks, and every refusal of a path reads the same, whatever the reason.
"""
from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

# An authority's certificate is a couple of KB; a bundle of a few dozen still fits.
MAX_PEM_BYTES = 256 * 1024
PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


class CaCertificateRefused(ValueError):
    """A CA file path or an uploaded PEM that cannot be used; the message is plain words for the admin."""


def configured_ca_dir(config: Mapping[str, Any]) -> str:
    """``IMAP_CA_DIR``, or "" when none is configured (then no CA file path is accepted, only uploads)."""
    return str(config.get("IMAP_CA_DIR") or "").strip()


def path_refusal(ca_dir: str) -> str:
    """The one message for every CA file path that cannot be used: it says nothing about the path itself."""
    if not ca_dir:
        return ("This CA file cannot be used: CA files on the CRM server are switched off (no CRM_IMAP_CA_DIR "
                "is configured). Upload the certificate instead.")
    return (f"This CA file cannot be used. Enter the full path of a PEM certificate inside {ca_dir} "
            "(the CA directory, CRM_IMAP_CA_DIR), or upload the certificate instead.")


def resolve_ca_file(path: str, ca_dir: str) -> str:
    """The real path of ``path`` when it is a readable file inside ``ca_dir``; raises CaCertificateRefused.

    Used before each connection: the file's content is checked when the TLS context loads it.
    """
    refused = CaCertificateRefused(path_refusal(ca_dir))
    if not ca_dir or not path or not os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
        raise refused
    try:
        root = os.path.realpath(ca_dir)
        real = os.path.realpath(path)  # symlinks resolved: one pointing out of the directory leads out of it
        inside = os.path.commonpath([root, real]) == root and real != root
    except (OSError, ValueError):
        raise refused from None
    if not inside or not os.path.isfile(real) or not os.access(real, os.R_OK):
        raise refused
    return real


def checked_ca_file(path: str, ca_dir: str) -> str:
    """Like resolve_ca_file, and the file must hold a PEM certificate: what a form or the CLI accepts."""
    real = resolve_ca_file(path, ca_dir)
    try:
        with open(real, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
        validate_pem(data)
    except (OSError, CaCertificateRefused):
        raise CaCertificateRefused(path_refusal(ca_dir)) from None
    return real


def validate_pem(data: bytes | str) -> str:
    """The uploaded certificate as text, when it is at most MAX_PEM_BYTES of PEM that TLS can load."""
    refused = CaCertificateRefused(
        f"This is not a CA certificate the CRM can use: upload a PEM file (text starting with {PEM_BEGIN}) of "
        f"at most {MAX_PEM_BYTES // 1024} KB.")
    if len(data) > MAX_PEM_BYTES:
        raise refused
    try:
        text = data.decode("ascii") if isinstance(data, bytes) else data
        text.encode("ascii")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise refused from None
    if PEM_BEGIN not in text:
        raise refused
    try:
        loaded = ssl.create_default_context(cadata=text).cert_store_stats()["x509"]
    except (ssl.SSLError, ValueError):
        raise refused from None
    if not loaded:
        raise refused
    return text
