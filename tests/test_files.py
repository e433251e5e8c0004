"""Atomic writes: the file appears whole, with the mode an ordinary new file gets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from verirepair.errors import InputError
from verirepair.files import atomic_write_bytes, atomic_write_text


def test_atomic_write_gives_the_mode_of_an_ordinary_new_file(tmp_path: Path) -> None:
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")  # the oracle: what open(path, "w") gives under this umask
    written = tmp_path / "written.txt"
    atomic_write_text(written, "hello")
    assert written.read_text() == "hello"
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_atomic_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_atomic_write_to_a_folder_is_one_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="it is a folder"):
        atomic_write_text(tmp_path, "x")
    assert os.listdir(tmp_path) == []
