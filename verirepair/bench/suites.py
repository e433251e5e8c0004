"""Property suites on the command line: which argument is the network and which are properties.

An argument is a folder (every ``*.vnnlib`` and ``*.vnnlib.gz`` in it, sorted by name), a VNN-COMP
instance list (a name ending in ``.csv``: its rows' properties, in order, whose network every row
must name alike), a VNN-LIB file (by extension, else by content: `looks_like_vnnlib`), or else the
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import looks_like_vnnlib
from .instances import read_instances

VNNLIB_SUFFIXES = (".vnnlib", ".vnnlib.gz")


@dataclass(frozen=True)
class SuiteFiles:
    """The network (None when no argument and no instance list names one) and the property
    files, in the order given."""

    network: Path | None
    properties: tuple[Path, ...]


def suite_files(arguments: Sequence[str | Path]) -> SuiteFiles:
    """The network and the properties ``arguments`` name (see the module); InputError for a
    missing file, an empty folder, two networks, or no property."""
    networks: list[tuple[Path, str]] = []  # each network named, with where it was named
    properties: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if not path.exists():
            raise InputError(path, None, "no such file")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VNNLIB_SUFFIXES))
            if not found:
                raise InputError(path, None, "the folder holds no .vnnlib or .vnnlib.gz file")
            properties += found
        elif path.name.lower().endswith(".csv"):
            for instance in read_instances(path):
                networks.append((instance.onnx, f"{path}, row {instance.index + 1}"))
                if not instance.vnnlib.exists():
                    raise InputError(instance.vnnlib, None, f"no such file (named by {path}, row {instance.index + 1})")
                properties.append(instance.vnnlib)
        elif looks_like_vnnlib(path):
            properties.append(path)
        else:
            networks.append((path, "an argument"))
    if not properties:
        raise InputError(", ".join(map(str, arguments)), None, "expected at least one .vnnlib property")
    for network, where in networks[1:]:
        first, named = networks[0]
        if network.resolve() != first.resolve():
            raise InputError(network, None, f"a property suite is of one network: {network} ({where}) is not "
                                            f"{first} ({named})")
    return SuiteFiles(networks[0][0] if networks else None, tuple(properties))
