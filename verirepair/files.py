"""Small file helpers shared by every stage: atomic writes and file-kind detection."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError


def check_writable(path: str | Path) -> None:
    """Refuse, before any work is done, an output path that cannot be written: a folder, or a file
    in a folder that does not exist or that this process cannot write to."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, None, "cannot write the output: it is a folder")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(path, None, f"cannot write the output: no folder {folder}")
    if not os.access(folder, os.W_OK):
        raise InputError(path, None, f"cannot write the output: folder {folder} is not writable")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename; a path that
    cannot be written is an `InputError` naming it (nothing is left behind)."""
    path = Path(path)
    check_writable(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise InputError(path, None, f"cannot write the output: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(path, None, f"cannot write the output: {error.strerror}") from None
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
