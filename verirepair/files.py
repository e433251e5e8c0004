"""Small file helpers shared by every stage: atomic writes and file-kind detection."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def looks_like_vnnlib(path: str | Path) -> bool:
    """By extension first (.vnnlib, .vnnlib.gz not supported), else by content: text s-expressions."""
    path = Path(path)
    if path.suffix.lower() == ".vnnlib":
        return True
    if path.suffix.lower() == ".onnx":
        return False
    try:
        head = path.read_bytes()[:256]
    except OSError:
        return False
    stripped = head.lstrip()
    return stripped.startswith((b";", b"("))
