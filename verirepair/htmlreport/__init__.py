"""HTML reports (``--report FILE.html``): one self-contained file per run, figures embedded.

Imported by the CLI only. Figures need matplotlib, the ``report`` extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..spec import Box
from .pages import FigureSettings, bench_page, repair_page, verify_page
from .peers import PeerResult, read_peers
from .plots import require_matplotlib

PEERS_FILE = "peers_results.csv"


def is_html(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".html", ".htm")


def points_domain(points: np.ndarray, lower: list[float] | None, upper: list[float] | None) -> Box:
    """The domain of a point-wise repair: the given corners, else the points' own extent (as `repair_points`)."""
    low = points.min(axis=0) if lower is None else np.broadcast_to(np.asarray(lower, float), points.shape[1:])
    high = points.max(axis=0) if upper is None else np.broadcast_to(np.asarray(upper, float), points.shape[1:])
    return Box(np.array(low, dtype=np.float64), np.array(high, dtype=np.float64))


def peers_beside(instances_csv: str | Path) -> list[PeerResult] | None:
    """Peers' results from ``peers_results.csv`` in the instances' folder, or None when there is none."""
    path = Path(instances_csv).parent / PEERS_FILE
    return read_peers(path) if path.is_file() else None


__all__ = ["FigureSettings", "bench_page", "is_html", "peers_beside", "points_domain", "repair_page",
           "require_matplotlib", "verify_page"]
