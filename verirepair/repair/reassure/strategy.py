"""`ReassureStrategy`: REASSURE patch networks behind the `RepairStrategy` interface.

Each call patches every linear region (of the *original* network) that holds a known
counterexample and, in area mode, every other region the localiser finds violating: by exact
enumeration for inputs of at most ``enumerate_max_dims`` dimensions, by sampling otherwise. A patch
is the minimal affine correction of its region (`patch_lp`), wrapped in a support network
(`support`) and summed with the others (`patch`); the result is exported as the original ONNX
graph with the patch network beside it (`beside`). Patches are kept between calls of one check-and-fix run, so every iteration only adds
the regions the verifier's new counterexample (and the localiser) point at.

Why the loop converges: a violation of ``f + Σ h_A`` can only lie in a region that violates in the
original and is not patched yet (see `patch.py`), and there are finitely many regions. A
counterexample inside an already patched region means float rounding ate the margin: that region
is solved again with a larger margin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from ...errors import SettingsError
from ...spec import Box, Spec
from ...verify import Deadline
from ..export_io import stored_parameters
from ..parameters import original_model
from ..strategy import RepairCandidate, RepairProblem, WithoutPolish
from .beside import patched_model
from .enumerate import enumerate_regions, region_violation, violating_points
from .export import mlp_to_onnx
from .patch import RegionPatch, patch_mlp
from .patch_lp import (
    AffinePatch,
    PatchInfeasible,
    minimal_patch,
    patch_margin_on_region,
)
from .regions import (
    LinearRegion,
    ReluNetwork,
    chebyshev_centre,
    implied_by_box,
    linear_region_of,
    pattern_key,
    relu_network_of,
)
from .stacked import stacked_patches_onnx
from .support import automatic_gamma

LOCALISERS = ("auto", "counterexamples", "enumerate", "flood", "sample")


@dataclass(frozen=True)
class ReassureSettings:
    # How regions to patch are found besides the counterexamples: "counterexamples" (point-wise
    # repair), "enumerate" (every region of each box), "flood" (the violating regions connected
    # to each counterexample's region, by the same facet walk, plus "sample"), "sample", or
    # "auto" (enumerate up to enumerate_max_dims inputs, flood up to flood_max_dims, sample above).
    # Violations of ACAS Xu property 2 are rare (0.01-2 % of the box) but come in connected
    # groups of regions: without the flood, each verification finds one more region.
    localise: str = "auto"
    enumerate_max_dims: int = 3
    enumerate_max_regions: int = 20_000
    flood_max_dims: int = 16
    flood_share: float = 0.3  # of the loop's remaining time, at most, per flood
    samples_per_box: int = 4096
    max_new_regions_per_call: int = 400
    # Patch margin: a·(f + p) >= β + margin on the region, margin = relative × (1 + max |f| on
    # the region's centre) — large enough to survive LP tolerances (1e-7 relative) and float32
    # output rounding (6e-8 relative), small next to the outputs. Regions whose original margin
    # is below it are patched too ("nearly violating"): the verifier could not prove them anyway.
    margin_relative: float = 1e-4
    # Patch form: "affine" (C x + d), "constant" (d only; cheap in high dimension), "auto"
    # (affine up to affine_max_dims inputs).
    form: str = "auto"
    affine_max_dims: int = 64
    # Support band as a fraction of the region's inradius (see `support.automatic_gamma`):
    # area repair (the verifier must resolve the band) and point-wise repair (locality only).
    band_fraction: float = 0.05
    band_fraction_points: float = 1e-4
    # Where the patches must be exactly zero away from their regions: K bounds |p| there and the
    # support network keeps every region row that can fail there. The hull of the property's
    # boxes, of this box and the problem's domain (the network's input space, e.g. ACAS Xu's
    # operating range: `--domain`) and of the problem's keep_inputs (the --data set). Outside it a
    # patch may leak.
    domain: Box | None = None

    def __post_init__(self) -> None:
        if self.localise not in LOCALISERS:
            raise SettingsError(f"unknown localiser {self.localise!r} (expected one of {', '.join(LOCALISERS)})")
        if self.form not in ("auto", "affine", "constant"):
            raise SettingsError(f"unknown patch form {self.form!r} (expected auto, affine or constant)")


@dataclass
class _Entry:
    patch: RegionPatch
    region_index: int  # which spec region it repairs
    margin: float
    rows: tuple[int, ...]
    cone: bool


@dataclass
class _State:
    original_id: int
    relu: ReluNetwork
    model: onnx.ModelProto  # the original's
    entries: dict[tuple[int, str], _Entry] = field(default_factory=dict)
    localised: set[int] = field(default_factory=set)  # spec regions already enumerated
    counts: dict[str, int] = field(default_factory=dict)


def spec_clauses(spec: Spec, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(c.A, c.b) for c in spec.regions[index].clauses if c.A.shape[0]]


def cone_rows(spec: Spec, index: int | None = None) -> np.ndarray:
    """Every row of every clause (of spec region ``index`` only, when given), scaled to unit
    length, duplicates removed."""
    regions = spec.regions if index is None else (spec.regions[index],)
    rows = [c.A for r in regions for c in r.clauses if c.A.shape[0]]
    if not rows:
        return np.zeros((0, spec.n_outputs))
    A = np.vstack(rows)
    A = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-300)
    return np.unique(np.round(A, 12), axis=0)


def patch_domain(problem: RepairProblem, domain: Box | None) -> tuple[np.ndarray, np.ndarray]:
    """The hull of the property's boxes, ``domain``, ``problem.domain`` and ``problem.keep_inputs``
    (see ReassureSettings)."""
    lows = [r.box.lower for r in problem.spec.regions]
    highs = [r.box.upper for r in problem.spec.regions]
    for given in (domain, problem.domain):
        if given is not None:
            lows.append(given.lower)
            highs.append(given.upper)
    if problem.keep_inputs is not None and len(problem.keep_inputs):
        used = np.asarray(problem.keep_inputs, dtype=np.float64).reshape(len(problem.keep_inputs), -1)
        lows.append(used.min(axis=0))
        highs.append(used.max(axis=0))
    return np.min(lows, axis=0).astype(np.float64), np.max(highs, axis=0).astype(np.float64)


class ReassureStrategy(WithoutPolish):
    name = "reassure"

    def __init__(self, settings: ReassureSettings | None = None) -> None:
        self.settings = settings or ReassureSettings()
        self._state: _State | None = None

    # -- the interface ---------------------------------------------------------------------------
    @property
    def patches(self) -> list[RegionPatch]:
        """The patches of the last candidate."""
        return [e.patch for e in self._state.entries.values()] if self._state is not None else []

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        if self._state is None or self._state.original_id != id(problem.original):
            self._state = _State(id(problem.original), relu_network_of(problem.original), original_model(problem.original))
        state = self._state
        spec = problem.spec
        times = {"localise": 0.0, "synthesise": 0.0, "export": 0.0}
        started = time.monotonic()
        todo = self._localise(problem, state, deadline)
        times["localise"] = time.monotonic() - started

        started = time.monotonic()
        domain = patch_domain(problem, self.settings.domain)
        new = 0
        failed = 0
        for index, point, grow, known in todo:
            if deadline.expired():
                break
            box = spec.regions[index].box
            region = known or linear_region_of(state.relu, point, box.lower, box.upper, prune=self._prune(spec))
            key = (index, region.key)
            old = state.entries.get(key)
            if old is not None and not grow:
                continue
            centre, radius = chebyshev_centre(region)
            margin = old.margin * 10 if old is not None else self._margin(region, centre)
            band = self.settings.band_fraction if problem.area else self.settings.band_fraction_points
            # Harmlessness rows: every row of the property in area mode; in point-wise mode only
            # the rows of the point's own label (points with other labels are only reached within
            # the support band, and the written file is checked on every point anyway).
            cone = cone_rows(spec) if problem.area else cone_rows(spec, index)
            try:
                entry = self._patch(region, index, spec, cone, domain, margin, band, centre, radius)
            except PatchInfeasible:
                failed += 1
                continue
            state.entries[key] = entry
            new += old is None
        times["synthesise"] = time.monotonic() - started

        started = time.monotonic()
        patches = [e.patch for e in state.entries.values()]
        metadata: dict[str, object] = {"strategy": self.name, "patches": len(patches)}
        # Point-wise repair may hold thousands of patches: the stacked form keeps the file linear in them.
        chain = (mlp_to_onnx(patch_mlp(patches, spec.n_inputs, spec.n_outputs), problem.original, metadata)
                 if problem.area else stacked_patches_onnx(patches, problem.original, metadata))
        model = patched_model(state.model, chain, problem.original)
        times["export"] = time.monotonic() - started
        details: dict[str, object] = {
            "regions_patched": len(patches),
            "regions_added": new,
            "patch_failures": failed,
            "parameters_added": stored_parameters(chain),
            "max_patch_norm": float(max((p.norm for p in patches), default=0.0)),
            "gamma_range": [float(min((p.gamma for p in patches), default=0.0)),
                            float(max((p.gamma for p in patches), default=0.0))],
            "patches_without_cone": int(sum(not e.cone for e in state.entries.values())),
            **state.counts,
        }
        return RepairCandidate(model, details, times)

    # -- pieces ----------------------------------------------------------------------------------
    def _prune(self, spec: Spec) -> bool:
        return spec.n_inputs <= self.settings.affine_max_dims

    def _affine(self, spec: Spec) -> bool:
        if self.settings.form == "auto":
            return spec.n_inputs <= self.settings.affine_max_dims
        return self.settings.form == "affine"

    def _margin(self, region: LinearRegion, centre: np.ndarray | None = None) -> float:
        if centre is None:
            centre = (region.lower + region.upper) / 2 if region.A.shape[0] == 0 else chebyshev_centre(region)[0]
        scale = float(np.max(np.abs(region.W @ centre + region.c)))
        return self.settings.margin_relative * (1.0 + scale)

    def _patch(self, region: LinearRegion, index: int, spec: Spec, cone: np.ndarray,
               domain: tuple[np.ndarray, np.ndarray], margin: float, band: float, centre: np.ndarray,
               radius: float) -> _Entry:
        clauses = spec_clauses(spec, index)
        affine = self._affine(spec)
        patch: AffinePatch = minimal_patch(region, clauses, cone, domain, margin, affine, centre)
        rows = [(clauses[k][0][r], clauses[k][1][r]) for k, r in enumerate(patch.rows)]
        if spec.n_inputs <= self.settings.affine_max_dims:
            # Independent check of the LP answer by primal LPs; re-solve once with more margin.
            achieved = patch_margin_on_region(region, patch, rows)
            if achieved < margin / 2:
                margin *= 10
                patch = minimal_patch(region, clauses, cone, domain, margin, affine, centre)
        lower, upper = domain
        K = patch.bound_on_box(lower, upper)
        K = K * (1 + 1e-6) + 1e-6 * (1 + K) + margin  # strictly above max |p| on the domain
        gamma = automatic_gamma(radius, band)
        # The support network needs only the rows that can fail on the domain: a row that holds on
        # the whole box (its faces, most of them) is 1 there whatever gamma. Without them the
        # support of an MNIST region has about 500 rows instead of 2,000 (784 x 2 box faces).
        # Exact test (no tolerance): the support is unchanged on the domain up to float rounding of
        # the box maximum, and the written file is checked (verified, or run on the points) anyway.
        needed = ~implied_by_box(region.A, region.b, lower, upper, tolerance=0.0)
        region_patch = RegionPatch(region.A[needed], region.b[needed], gamma, patch.C, patch.d, K, region.key, patch.norm)
        return _Entry(region_patch, index, margin, patch.rows, patch.cone)

    def _localise(self, problem: RepairProblem, state: _State, deadline: Deadline) -> list[tuple[int, np.ndarray, bool, LinearRegion | None]]:
        """(spec region, point, re-solve if already patched) for every region to patch now."""
        spec = problem.spec
        todo: list[tuple[int, np.ndarray, bool, LinearRegion | None]] = []
        if problem.targets is not None:
            # Point-wise repair with several labels: each point names its own spec region.
            return [(target, np.asarray(x, dtype=np.float64), x is problem.counterexamples[-1], None)
                    for x, target in zip(problem.counterexamples, problem.targets)]
        y = state.relu.forward(np.array(problem.counterexamples)) if problem.counterexamples else np.zeros((0, spec.n_outputs))
        for x, yx in zip(problem.counterexamples, y):
            for index, region in enumerate(spec.regions):
                if region.box.contains(x) and any(c.violated_by(yx) for c in region.clauses):
                    todo.append((index, np.asarray(x, dtype=np.float64), x is problem.counterexamples[-1], None))
                    break
            else:
                # Violates only in the repaired network (float rounding at a patched region's edge):
                # re-solve the region that holds it with a larger margin.
                for index, region in enumerate(spec.regions):
                    if region.box.contains(x):
                        todo.append((index, np.asarray(x, dtype=np.float64), x is problem.counterexamples[-1], None))
                        break
        mode = self.settings.localise
        if mode == "counterexamples" or not problem.area:
            return todo
        if mode == "auto":
            mode = ("enumerate" if spec.n_inputs <= self.settings.enumerate_max_dims else
                    "flood" if spec.n_inputs <= self.settings.flood_max_dims else "sample")
        rng = np.random.default_rng(problem.seed + len(problem.counterexamples))
        for index, region in enumerate(spec.regions):
            clauses = spec_clauses(spec, index)
            if mode == "flood":
                todo += self._flood(state, index, region.box, [p for i, p, _, _ in todo if i == index], clauses, deadline)
            if mode == "enumerate":
                if index in state.localised:
                    continue
                state.localised.add(index)
                regions, complete = enumerate_regions(state.relu, region.box.lower, region.box.upper, deadline,
                                                      self.settings.enumerate_max_regions)
                state.counts["regions_enumerated"] = state.counts.get("regions_enumerated", 0) + len(regions)
                state.counts["enumeration_complete"] = int(complete)
                buggy = 0
                for r in regions:
                    hit = self._violation(r, clauses)
                    if hit is not None:
                        buggy += 1
                        todo.append((index, hit, False, r))
                state.counts["regions_needing_patch"] = state.counts.get("regions_needing_patch", 0) + buggy
            if mode in ("flood", "sample"):
                points = violating_points(state.relu, clauses, region.box.lower, region.box.upper,
                                          self.settings.samples_per_box, rng, 0.0)
                seen = {k for (i, k) in state.entries if i == index}
                for p, pattern in zip(points, state.relu.patterns(points)):
                    key = pattern_key(pattern)
                    if key not in seen:
                        seen.add(key)
                        todo.append((index, p, False, None))
                    if len(todo) >= self.settings.max_new_regions_per_call:
                        break
        return todo

    def _violation(self, region: LinearRegion, clauses: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
        """A point of the region that violates (or nearly violates: within the patch margin) a clause."""
        tolerance = self._margin(region)
        for A, b in clauses:
            hit = region_violation(region, A, b, tolerance)
            if hit is not None:
                return hit
        return None

    def _flood(self, state: _State, index: int, box: Box, seeds: list[np.ndarray],
               clauses: list[tuple[np.ndarray, np.ndarray]], deadline: Deadline) -> list[tuple[int, np.ndarray, bool, LinearRegion | None]]:
        """The not yet patched regions among the violating ones connected to the seeds' regions."""
        if not seeds:
            return []
        hits: dict[str, np.ndarray] = {}

        def violating(region: LinearRegion) -> bool:
            hit = self._violation(region, clauses)
            if hit is not None:
                hits[region.key] = hit
            return hit is not None

        budget = Deadline(max(0.0, self.settings.flood_share * deadline.remaining()))
        regions, complete = enumerate_regions(state.relu, box.lower, box.upper, budget,
                                              self.settings.max_new_regions_per_call, np.vstack(seeds), violating)
        state.counts["regions_flooded"] = state.counts.get("regions_flooded", 0) + len(regions)
        state.counts["flood_complete"] = int(complete)
        return [(index, hits[r.key], False, r) for r in regions if (index, r.key) not in state.entries]


def reassure_strategy() -> ReassureStrategy:
    return ReassureStrategy()
