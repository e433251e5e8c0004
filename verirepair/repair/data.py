"""Data sets for side-effect figures: ``.npz`` or HDF5 (``.h5``) files with arrays ``X`` and ``y``.

``X`` holds the inputs in the network's input units (one row per point, flattened); ``y`` is
optional and holds labels (1-D) or target scores (2-D, the label is their arg-max).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..extras import require


def load_data(path: str | Path, n_inputs: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "no such file")
    if path.suffix in (".h5", ".hdf5"):
        h5py = require("h5py", "hdf5", "needed to read .h5 files")
        try:
            with h5py.File(path, "r") as f:
                if "X" not in f:
                    raise InputError(path, None, "no dataset 'X'")
                X = np.asarray(f["X"], dtype=np.float64)
                y = np.asarray(f["y"]) if "y" in f else None
        except OSError as error:
            raise InputError(path, None, f"not a readable HDF5 file ({error})") from None
    else:
        try:
            with np.load(path, allow_pickle=False) as f:
                if "X" not in f:
                    raise InputError(path, None, "no array 'X'")
                X = np.asarray(f["X"], dtype=np.float64)
                y = np.asarray(f["y"]) if "y" in f else None
        except (OSError, ValueError) as error:
            raise InputError(path, None, f"not a readable .npz file ({error})") from None
    X = X.reshape(X.shape[0], -1)
    if n_inputs is not None and X.shape[1] != n_inputs:
        raise InputError(path, "X", f"rows have {X.shape[1]} values, the network takes {n_inputs}")
    return X, y


def load_points(path: str | Path) -> np.ndarray:
    """Buggy inputs from ``.npy`` (no pickles), one row per point."""
    path = Path(path)
    try:
        points = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except (OSError, ValueError) as error:
        raise InputError(path, None, f"not a readable .npy array ({error})") from None
    points = np.asarray(points, dtype=np.float64)
    return points.reshape(points.shape[0], -1) if points.ndim > 1 else points[None, :]
