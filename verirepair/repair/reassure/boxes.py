"""Area repair with patches on boxes: REASSURE's support network around the boxes that branch and
bound cannot prove, instead of around exact linear regions (``--strategy reassure-boxes``).

On ACAS Xu the violating set of property 2 crosses hundreds of tiny linear regions, and the
network patched region by region is very hard for the verifier (sharp bands around thin
polytopes). Here the localiser is the verifier's own input split (`open_cover`): it splits the
property's box until every box outside a cover of at most ``max_boxes`` boxes is *proven* safe.
Each cover box ``B`` gets a constant patch ``d_B`` from CROWN's lower bounds of the property rows
on ``B``: for every clause not refuted on ``B``, one row ``a·y <= β`` gets ``a·d_B >= β + margin -
min_B a·f``, so ``f + d_B`` is safe on all of ``B``. Of the candidate patches (least norm, raising
only, lowering only, per choice of rows) the one that keeps the decision of the most samples of
``B`` wins. The cone constraints of `patch_lp` (``a_r·d_B >=
0`` for every property row) make partial and overlapping patches harmless (see `patch.py`): in the
support band outside ``B`` the network moves only further into the safe set. Hence the patched
network is safe on the cover (its patch) and off it (proven before, and only moved into the safe
set) — which the loop then proves on the exported file with the complete verifier.

The support network is the one of `support.py` on the box's ``2n`` faces, in coordinates
normalised by the property box, with a band of ``band_fraction`` of the box's inradius.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from ...bounds import BoundEngine
from ...spec import Box, Spec
from ...verify import Deadline, VerifySettings
from ...verify.falsify import descend
from ...verify.input_split import open_cover
from ...verify.objective import RegionRows, box_tensors
from ..export_io import stored_parameters
from ..parameters import original_model
from ..report import decisions_changed
from ..strategy import RepairCandidate, RepairProblem, WithoutPolish
from .beside import patched_model
from .export import mlp_to_onnx
from .patch import RegionPatch, patch_mlp
from .patch_lp import MAX_ROW_COMBINATIONS, AffinePatch, PatchInfeasible, constant_patch
from .regions import ReluNetwork, implied_by_box, relu_network_of
from .strategy import cone_rows, patch_domain
from .support import automatic_gamma

# The descent of one box's samples stops after this long, whatever its steps.
DESCENT_SECONDS = 5.0


@dataclass(frozen=True)
class BoxPatchSettings:
    max_boxes: int = 64  # per property region: the cover's size, at most (the verifier pays for each box)
    cover_share: float = 0.3  # of the remaining time, at most, for the cover
    # Patch margin: a patched row ends margin_relative × (1 + |its sampled value|) inside the safe
    # set, so the verifier's bounds on sub-boxes have room.
    margin_relative: float = 0.02
    margin_growth: float = 4.0  # per undecided verification, for every patch
    band_fraction: float = 0.05
    domain: Box | None = None  # see ReassureSettings.domain
    # Samples per box: for the patch that keeps the most decisions (among those at most
    # max_norm_ratio times larger than the smallest), and for the size of the patch (see _need).
    samples: int = 256
    descents: int = 8  # of the samples, the most violating refined by this many descent steps
    descent_steps: int = 30
    max_norm_ratio: float = 4.0
    sample_factor: float = 8.0
    seed: int = 0


@dataclass
class _BoxPatch:
    patch: RegionPatch
    region_index: int
    lower: np.ndarray
    upper: np.ndarray
    scale: float  # margin multiplier


@dataclass
class _State:
    original_id: int
    relu: ReluNetwork
    model: onnx.ModelProto  # the original's
    engine: BoundEngine
    device: torch.device
    boxes: list[_BoxPatch] = field(default_factory=list)
    covered: bool = False  # the cover was computed (its boxes, less those CROWN refutes, are `boxes`)
    counterexamples: int = 0


def _box_rows(lower: np.ndarray, upper: np.ndarray, space: Box) -> tuple[np.ndarray, np.ndarray]:
    """``A x <= b`` for the box, rows unit in coordinates normalised by ``space``'s widths."""
    width = _widths(space)
    eye = np.diag(1.0 / width)
    return np.vstack([eye, -eye]), np.concatenate([upper / width, -lower / width])


def patch_candidates(needs: list[list[tuple[np.ndarray, float]]], cone: np.ndarray, n_inputs: int) -> list[AffinePatch]:
    """Constant patches meeting one row's need per clause: for every choice of rows (all
    combinations up to `MAX_ROW_COMBINATIONS`, else the least needy row of each clause), the one of
    least norm, the least raising only and the least lowering only (those can keep decisions that
    the least-norm one flips: on ACAS Xu property 2, lowering "clear of conflict" makes it the
    advisory where it was a close second)."""
    combos = list(itertools.islice(itertools.product(*needs), MAX_ROW_COMBINATIONS + 1))
    if len(combos) > MAX_ROW_COMBINATIONS:
        combos = [tuple(min(clause, key=lambda row: row[1]) for clause in needs)]
    found = []
    for combo in combos:
        for sign in (0, 1, -1):
            try:
                found.append(constant_patch(list(combo), cone, n_inputs, sign))
            except PatchInfeasible:
                continue
    if not found:
        raise PatchInfeasible("no constant patch in the property's cone refutes the box's clauses")
    return found


class BoxPatchStrategy(WithoutPolish):
    name = "reassure-boxes"

    def __init__(self, settings: BoxPatchSettings | None = None) -> None:
        self.settings = settings or BoxPatchSettings()
        self._state: _State | None = None

    @property
    def patches(self) -> list[RegionPatch]:
        """The patches of the last candidate."""
        return [e.patch for e in self._state.boxes] if self._state is not None else []

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        if not problem.area:
            raise ValueError("reassure-boxes repairs whole properties; use reassure for point-wise repair")
        if self._state is None or self._state.original_id != id(problem.original):
            device = torch.device(problem.device)
            relu = relu_network_of(problem.original)
            self._state = _State(id(problem.original), relu, original_model(problem.original),
                                 BoundEngine(relu.graph.to(device)), device)
        state = self._state
        spec = problem.spec
        region_rows = [RegionRows.of(region, spec.n_outputs, state.device) for region in spec.regions]
        times = {"localise": 0.0, "synthesise": 0.0, "export": 0.0}
        started = time.monotonic()
        if not state.covered:
            todo = self._cover(spec, region_rows, deadline)
            state.covered = True
        else:
            new = problem.counterexamples[state.counterexamples:]
            todo = self._refine(spec, new) if new else []
            if not new:  # undecided: every patch asks for more margin
                for entry in state.boxes:
                    entry.scale *= self.settings.margin_growth
                todo = [(e.region_index, e.lower, e.upper, e.scale) for e in state.boxes]
                state.boxes = []
        state.counterexamples = len(problem.counterexamples)
        times["localise"] = time.monotonic() - started

        started = time.monotonic()
        domain = patch_domain(problem, self.settings.domain)
        cone = cone_rows(spec)
        failed = 0
        for index, lower, upper, scale in todo:
            try:
                entry = self._patch(state, spec, region_rows[index], index, lower, upper, scale, cone, domain,
                                    problem.decision)
            except PatchInfeasible:
                failed += 1
                continue
            if entry is not None:
                state.boxes.append(entry)
        times["synthesise"] = time.monotonic() - started

        started = time.monotonic()
        patches = [e.patch for e in state.boxes]
        chain = mlp_to_onnx(patch_mlp(patches, spec.n_inputs, spec.n_outputs), problem.original,
                            {"strategy": self.name, "patches": len(patches)})
        model = patched_model(state.model, chain, problem.original)
        times["export"] = time.monotonic() - started
        details: dict[str, object] = {
            "regions_patched": len(patches),
            "patch_failures": failed,
            "parameters_added": stored_parameters(chain),
            "max_patch_norm": float(max((p.norm for p in patches), default=0.0)),
            "cover_volume": float(sum(np.prod((e.upper - e.lower) / _widths(spec.regions[e.region_index].box))
                                      for e in state.boxes)),
        }
        return RepairCandidate(model, details, times)

    def _cover(self, spec: Spec, region_rows: list[RegionRows], deadline: Deadline) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
        """Every box of each region's cover (see `open_cover`)."""
        assert self._state is not None
        todo = []
        share = Deadline(self.settings.cover_share * deadline.remaining())
        for index, (region, rows) in enumerate(zip(spec.regions, region_rows)):
            cover = open_cover(self._state.engine, rows, region, VerifySettings(), share,
                               max(1, self.settings.max_boxes))
            todo += [(index, lo, hi, 1.0) for lo, hi in zip(cover.lower.cpu().numpy(), cover.upper.cpu().numpy())]
        return todo

    def _refine(self, spec: Spec, points: tuple[np.ndarray, ...]) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
        """For a counterexample inside a patched box, that box again with a 10× larger patch (the
        sampled shortfall underestimated it, or float rounding ate the margin); outside every box
        (only float rounding can put it there), a box around it as small as the smallest one."""
        assert self._state is not None
        state = self._state
        todo = []
        for x in points:
            hit = [e for e in state.boxes if np.all(x >= e.lower) and np.all(x <= e.upper)]
            state.boxes = [e for e in state.boxes if not any(e is h for h in hit)]
            todo += [(entry.region_index, entry.lower, entry.upper, entry.scale * 10) for entry in hit]
            if hit:
                continue
            for index, region in enumerate(spec.regions):
                if region.box.contains(x):
                    sizes = [e.upper - e.lower for e in state.boxes if e.region_index == index]
                    half = (min(sizes, key=lambda s: float(s.max())) if sizes else region.box.upper - region.box.lower) / 2
                    todo.append((index, np.maximum(x - half, region.box.lower), np.minimum(x + half, region.box.upper), 1.0))
                    break
        return todo

    def _need(self, bound: float, sampled: float, scale: float) -> float:
        """What a patch must add to a row: CROWN's shortfall plus a margin (enough whatever the
        verifier's splits), or, when smaller, ``sample_factor × scale`` times the shortfall seen on
        the samples (plus the margin): far smaller where CROWN is loose, and the verifier decides
        whether it is enough (an undecided or violated candidate multiplies ``scale``)."""
        margin = self.settings.margin_relative * (1 + abs(sampled))
        sound = margin * scale - bound + self.settings.margin_relative * abs(bound) * scale
        guess = self.settings.sample_factor * scale * (max(0.0, -sampled) + margin)
        return min(sound, guess)

    def _patch(self, state: _State, spec: Spec, rows: RegionRows, index: int, lower: np.ndarray, upper: np.ndarray, scale: float,
               cone: np.ndarray, domain: tuple[np.ndarray, np.ndarray], decision: str) -> _BoxPatch | None:
        """The box's patch; None when CROWN already refutes every clause on it."""
        region = spec.regions[index]
        lo, hi = box_tensors(Box(lower, upper), state.device)
        with torch.no_grad():
            bounds = state.engine.output_bounds(lo, hi, rows.A, -rows.b, method="alpha-crown").lower[0].cpu().numpy()
        A, b, owner = rows.A.cpu().numpy(), rows.b.cpu().numpy(), rows.owner.cpu().numpy()
        x = lower + np.random.default_rng(self.settings.seed).random((self.settings.samples, len(lower))) * (upper - lower)
        # plus the most violating samples pushed further by projected descent on the violation margin
        with torch.no_grad():
            samples = torch.as_tensor(x, device=state.device)
            worst = samples[rows.margin(state.engine.graph.forward(samples)).argsort()[:self.settings.descents]]
        refined = descend(state.engine.graph, rows, worst, lo, hi, self.settings.descent_steps, Deadline(DESCENT_SECONDS))
        x = np.vstack([x, refined.cpu().numpy()])
        y = state.relu.forward(x)
        sampled = (y @ A.T - b).min(axis=0)  # per row, its smallest value on the samples
        needs = []
        for k in range(rows.n_clauses):
            mine = np.flatnonzero(owner == k)
            if np.any(bounds[mine] > 0):
                continue  # refuted on the box already; the cone keeps it refuted
            needs.append([(A[r], self._need(float(bounds[r]), float(sampled[r]), scale)) for r in mine])
        if not needs:
            return None
        # Of the candidates, the one that changes the decision (the problem's rule: arg-max, arg-min
        # or the whole ranking) of the fewest samples of the box,
        # then the smallest.
        candidates = patch_candidates(needs, cone, spec.n_inputs)
        smallest = min(p.norm for p in candidates)
        patch = min((p for p in candidates if p.norm <= self.settings.max_norm_ratio * smallest),
                    key=lambda p: (int(decisions_changed(y, y + p.d, decision).sum()), p.norm))
        K = patch.norm * (1 + 1e-6) + 1e-6
        support_A, support_b = _box_rows(lower, upper, region.box)
        needed = ~implied_by_box(support_A, support_b, *domain, tolerance=0.0)
        inradius = float(np.min((upper - lower) / _widths(region.box))) / 2
        gamma = automatic_gamma(inradius, self.settings.band_fraction)
        key = f"box{index}:" + ",".join(f"{v:.6g}" for v in np.concatenate([lower, upper]))
        region_patch = RegionPatch(support_A[needed], support_b[needed], gamma, patch.C, patch.d, K, key, patch.norm)
        return _BoxPatch(region_patch, index, lower, upper, scale)


def _widths(box: Box) -> np.ndarray:
    return np.where(box.upper > box.lower, box.upper - box.lower, 1.0)


def box_patch_strategy() -> BoxPatchStrategy:
    return BoxPatchStrategy()
