"""Secrets generated once and kept in the instance folder, so nothing needs configuring to start."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def instance_secret(instance_path: str, filename: str, generate: Callable[[], str]) -> str:
    """Return the secret stored in ``instance_path/filename``, creating it (mode 0600) when missing."""
    path = Path(instance_path) / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    # O_EXCL: when two processes start at once, exactly one writes and both read the same key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
