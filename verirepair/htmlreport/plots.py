"""Figures as PNG bytes (matplotlib, off-screen). Each function draws one figure from plain arrays."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..extras import require


def require_matplotlib() -> None:
    """Fail with one line naming the extra, before any long run whose report would need it."""
    require("matplotlib", "report", "needed for HTML reports")


def _pyplot():  # type: ignore[no-untyped-def]
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def change_histogram(change: np.ndarray, violating: np.ndarray | None, title: str) -> bytes:
    """Histogram of per-sample ``|Δ output|_inf``; where ``violating`` is given, the samples on which
    the original violates the property are drawn apart."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 3.6))
    top = float(change.max()) if change.size and change.max() > 0 else 1.0
    bins = np.linspace(0.0, top, 41)
    groups = [(change, "samples", "#3a6ea5")] if violating is None else \
        [(change[~violating], "original safe", "#3a6ea5"), (change[violating], "original violates", "#c62828")]
    present = [(values, label, colour) for values, label, colour in groups if values.size]
    axes.hist([v for v, _, _ in present], bins=bins, stacked=True, label=[lab for _, lab, _ in present],
              color=[c for _, _, c in present])
    axes.set_yscale("log")
    axes.set_xlabel("|Δ output|∞ = max over outputs of |repaired − original|")
    axes.set_ylabel("samples (log)")
    axes.set_title(title)
    axes.legend()
    return _png(figure)


@dataclass(frozen=True)
class DecisionMap:
    """Decisions on a grid over two input axes; ``before``/``after`` hold class indices, shape (ny, nx)."""

    x_values: np.ndarray
    y_values: np.ndarray
    x_label: str
    y_label: str
    before: np.ndarray
    after: np.ndarray


def decision_maps(grid: DecisionMap, class_names: Sequence[str], title: str) -> bytes:
    """Original and repaired decisions side by side, and where they differ."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    n = len(class_names)
    palette = plt.get_cmap("tab10" if n <= 10 else "tab20")
    colours = ListedColormap([palette(i % palette.N) for i in range(n)])
    norm = BoundaryNorm(np.arange(-0.5, n), n)
    extent = (grid.x_values[0], grid.x_values[-1], grid.y_values[0], grid.y_values[-1])
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    for ax, values, name in ((axes[0], grid.before, "original"), (axes[1], grid.after, "repaired")):
        ax.imshow(values, origin="lower", extent=extent, aspect="auto", cmap=colours, norm=norm, interpolation="nearest")
        ax.set_title(name)
    changed = grid.before != grid.after
    axes[2].imshow(changed, origin="lower", extent=extent, aspect="auto", interpolation="nearest",
                   cmap=ListedColormap(["#eeeeee", "#c62828"]), vmin=0, vmax=1)
    axes[2].set_title(f"decision changed on {100 * changed.mean():.2f}% of the grid")
    for ax in axes:
        ax.set_xlabel(grid.x_label)
        ax.set_ylabel(grid.y_label)
    shown = sorted(set(np.unique(grid.before)) | set(np.unique(grid.after)))
    figure.legend(handles=[Patch(color=colours(int(k)), label=class_names[int(k)]) for k in shown],
                  loc="lower center", ncol=min(len(shown), 10), bbox_to_anchor=(0.5, -0.06))
    figure.suptitle(title)
    return _png(figure)


def class_accuracy(classes: Sequence[int], before: np.ndarray, after: np.ndarray, counts: np.ndarray) -> bytes:
    """Bars of per-class accuracy before and after repair."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6, 0.7 * len(classes) + 2), 3.6))
    position = np.arange(len(classes))
    axes.bar(position - 0.2, 100 * before, 0.4, label="original", color="#9e9e9e")
    axes.bar(position + 0.2, 100 * after, 0.4, label="repaired", color="#3a6ea5")
    axes.set_xticks(position, [f"{c}\n(n={n})" for c, n in zip(classes, counts)])
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    axes.set_title("per-class accuracy on the --data set")
    return _png(figure)


@dataclass(frozen=True)
class PeerMark:
    """What an aggregate results row allows: the share solved and the median time of solved instances."""

    tool: str
    solved_percent: float
    median_seconds: float | None


def cactus(solved_seconds: Sequence[float], instances: int, peers: Sequence[PeerMark], title: str) -> bytes:
    """Share of instances solved within each time, with peers' aggregates as reference markers."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 5))
    times = np.sort(np.asarray(solved_seconds, dtype=float))
    shares = 100 * np.arange(1, times.size + 1) / max(instances, 1)
    if times.size:
        axes.step(np.concatenate([[times[0]], times]), np.concatenate([[0.0], shares]), where="post",
                  color="black", linewidth=2.2, label=f"verirepair ({times.size}/{instances} solved)")
    palette = plt.get_cmap("tab10")
    for k, peer in enumerate(peers):
        colour = palette(k % 10)
        axes.axhline(peer.solved_percent, color=colour, linestyle=":", linewidth=1)
        if peer.median_seconds is not None and peer.median_seconds > 0:
            axes.plot([peer.median_seconds], [peer.solved_percent / 2], "o", color=colour,
                      label=f"{peer.tool}: {peer.solved_percent:.0f}% solved")
        else:
            axes.plot([], [], "o", color=colour, label=f"{peer.tool}: {peer.solved_percent:.0f}% solved")
    axes.set_xscale("log")
    axes.set_xlabel("time (s, log)")
    axes.set_ylabel("instances solved (%)")
    axes.set_ylim(0, 105)
    axes.set_title(title)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    return _png(figure)
