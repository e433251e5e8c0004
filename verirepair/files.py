"""Small file helpers shared by every stage: atomic writes, reading inputs that may be gzip-compressed,
and file-kind detection."""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
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
        os.fchmod(handle, _new_file_mode())  # mkstemp makes 0600; a written result is an ordinary file
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


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


GZIP_MAGIC = b"\x1f\x8b"
"""First bytes of a gzip stream. Neither a VNN-LIB text nor an ONNX protobuf can start with them
(0x1f would be protobuf field 3 with the undefined wire type 7), so compression is recognised by
content, whatever the file is called."""


def is_gzip(data: bytes) -> bool:
    return data.startswith(GZIP_MAGIC)


def read_input_bytes(path: str | Path) -> bytes:
    """The content of an input file (network or property), decompressed when it is gzip
    (``.onnx.gz``, ``.vnnlib.gz``); a missing, unreadable or corrupt file is an `InputError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, None, "not a regular file") from None
    except OSError as error:
        raise InputError(path, None, f"cannot read: {error.strerror or error}") from None
    return decompressed(data, path)


def decompressed(data: bytes, path: str | Path) -> bytes:
    """``data`` (read from ``path``) decompressed when it is gzip, else as it is; a corrupt gzip
    stream is an `InputError` naming ``path``."""
    if not is_gzip(data):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(path, None, f"cannot decompress the gzip file: {error or type(error).__name__}") from None


def looks_like_vnnlib(path: str | Path) -> bool:
    """By extension first (.vnnlib, .vnnlib.gz, .onnx, .onnx.gz), else by content, decompressed when
    it is gzip: text s-expressions."""
    name = Path(path).name.lower()
    if name.endswith((".vnnlib", ".vnnlib.gz")):
        return True
    if name.endswith((".onnx", ".onnx.gz")):
        return False
    try:
        with open(path, "rb") as stream:
            head = stream.read(256)
        if is_gzip(head):
            with gzip.open(path, "rb") as stream:
                head = stream.read(256)
    except (OSError, EOFError, zlib.error):
        return False
    stripped = head.lstrip()
    return stripped.startswith((b";", b"("))
