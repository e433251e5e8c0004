"""The sample sets BIRDNN learns from, with the original network's behaviour on each.

`PropertyMargin` evaluates the property margin of a whole `Spec` on a batch (a point may lie in
several regions' boxes: its margin is the smallest over those regions). `RepairData` holds the
domain samples (inside the boxes: positives and negatives), a held-out validation draw of the boxes
used for rollback, and the outside samples whose behaviour the repair must keep.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ...spec import Box, Spec
from ..input_domain import outside_boxes
from ..parameters import TrainableNetwork
from .domain import (
    RegionTensors,
    contained,
    default_input_space,
    near,
    uniform_in,
)
from .settings import BirdnnSettings

EVALUATION_CHUNK = 8192  # points per forward pass of the original network


def draws_per_box(settings: BirdnnSettings, n_boxes: int, n_inputs: int) -> tuple[int, int]:
    """Uniform training and validation draws per box: the settings' counts, both scaled down in
    proportion when all draws together would take more than ``sample_memory_mb`` as float64."""
    wanted = (settings.domain_samples + settings.validation_samples) * n_boxes * n_inputs * 8
    share = min(1.0, settings.sample_memory_mb * 2**20 / max(wanted, 1))
    return max(1, int(settings.domain_samples * share)), max(1, int(settings.validation_samples * share))


class PropertyMargin:
    """Batched property margins of one `Spec` (> 0 iff the property holds at the point)."""

    def __init__(self, spec: Spec, dtype: torch.dtype = torch.float32) -> None:
        self.spec = spec
        self.regions = [RegionTensors.of(region, dtype) for region in spec.regions]

    def membership(self, x: np.ndarray) -> torch.Tensor:
        """[N, R] bool: which regions' boxes contain each point."""
        return torch.from_numpy(np.stack([contained(r.box, x) for r in self.regions], axis=1))

    def margin(self, y: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
        """[N]: smallest property margin over the regions containing each point (+inf if none)."""
        values = torch.stack([r.margin(y) for r in self.regions], dim=1)
        return torch.where(member.to(y.device), values, torch.full_like(values, torch.inf)).amin(dim=1)


@dataclass
class SampleSet:
    x: torch.Tensor  # [N, n] inputs in the training dtype
    member: torch.Tensor  # [N, R] region membership
    y0: torch.Tensor  # [N, m] original outputs
    margin0: torch.Tensor  # [N] original property margins (+inf outside every box)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: torch.Tensor) -> SampleSet:
        return SampleSet(self.x[index], self.member[index], self.y0[index], self.margin0[index])

    @staticmethod
    def concat(first: SampleSet, second: SampleSet) -> SampleSet:
        return SampleSet(torch.cat([first.x, second.x]), torch.cat([first.member, second.member]),
                         torch.cat([first.y0, second.y0]), torch.cat([first.margin0, second.margin0]))


class RepairData:
    """Domain characterisation of one repair problem (built once, grown with counterexamples).

    Outside samples (behaviour kept) are uniform points of the input space (``domain`` when the
    settings name none) outside the boxes,
    plus up to as many of ``keep_inputs`` (e.g. the user's data set) outside the boxes."""

    def __init__(self, spec: Spec, original: TrainableNetwork, settings: BirdnnSettings, dtype: torch.dtype = torch.float32,
                 keep_inputs: np.ndarray | None = None, decision: str = "argmax", domain: Box | None = None) -> None:
        self.spec = spec
        self.decision = decision  # "argmax", "argmin" or "ranking": which order of the outputs to keep
        self.original = original
        self.settings = settings
        self.dtype = dtype
        self.property = PropertyMargin(spec, dtype)
        self.rng = np.random.default_rng(settings.seed)
        self.seen: set[bytes] = set()
        boxes = [r.box for r in spec.regions]
        per_box, validation_per_box = draws_per_box(settings, len(boxes), spec.n_inputs)
        self.domain = self.evaluate(np.vstack([uniform_in(b, per_box, self.rng) for b in boxes]))
        # fraction of the uniform box samples where the original violates (before counterexamples)
        self.violating_fraction = float((self.domain.margin0 <= 0).double().mean())
        self.validation = self.evaluate(np.vstack([uniform_in(b, validation_per_box, self.rng) for b in boxes]))
        # Where behaviour outside the boxes is kept: the settings' input space, else the problem's
        # domain (`--domain`), else a stand-in around the boxes.
        space = settings.input_space or domain or default_input_space(spec, settings.input_space_widen)
        self.input_space: Box = space
        outside = [outside_boxes(spec, space, settings.outside_samples, self.rng)]
        if keep_inputs is not None:  # the inputs the network is used on, where given, count most
            used = np.asarray(keep_inputs, dtype=np.float64).reshape(len(keep_inputs), -1)
            used = used[~np.any([contained(b, used) for b in boxes], axis=0)]
            outside.append(used[np.sort(self.rng.permutation(len(used))[:settings.outside_samples])])
        self.outside = self.evaluate(np.vstack(outside))
        finite = self.domain.margin0[torch.isfinite(self.domain.margin0)].abs()
        # Scale of the property margin: the median distance of the original's outputs to the
        # property boundary over the box; losses and the target margin are measured in it.
        self.scale = float(finite.median()) if finite.numel() else 1.0
        self.scale = max(self.scale, 1e-6)
        self.target_margin = settings.target_margin * self.scale
        # Output changes outside the boxes are measured per sample, in the smaller of the margin
        # scale and the sample's own output spread: far from the boxes (e.g. a data set on
        # another input scale) outputs can be orders of magnitude smaller than inside.
        spread = self.outside.y0.amax(dim=1) - self.outside.y0.amin(dim=1) if len(self.outside) else self.outside.y0[:, 0]
        self.outside_scale = spread.clamp(min=1e-3 * self.scale, max=self.scale).unsqueeze(1)
        self.targets = self.domain.y0.clone()
        self.refresh_targets()

    @functools.cached_property
    def outside_held_out(self) -> SampleSet:
        """Uniform samples of the input space outside the boxes that training never sees (the
        guard of polishing on decisions outside the boxes), drawn with a generator of their own
        so that drawing them leaves every other draw as it was."""
        rng = np.random.default_rng(self.settings.seed + 1)
        return self.evaluate(outside_boxes(self.spec, self.input_space, self.settings.outside_samples, rng))

    def evaluate(self, x: np.ndarray) -> SampleSet:
        """Points with the original network's outputs and margins."""
        points = torch.tensor(np.asarray(x, dtype=np.float64).reshape(-1, self.spec.n_inputs), dtype=self.dtype)
        with torch.no_grad():  # in chunks: a convolutional network's activations of every point at once can be large
            y0 = torch.cat([self.original(chunk) for chunk in points.split(EVALUATION_CHUNK)]) if len(points) else self.original(points)
        member = self.property.membership(points.double().numpy()) if len(points) else torch.zeros((0, len(self.property.regions)), dtype=torch.bool)
        return SampleSet(points, member, y0, self.property.margin(y0, member))

    @property
    def negatives(self) -> torch.Tensor:
        return self.domain.margin0 <= 0

    def refresh_targets(self) -> None:
        """Targets of every domain sample: its own output for positives, imitation for negatives."""
        from .imitation import imitation_targets

        self.targets = self.domain.y0.clone()
        negative = self.negatives
        if not bool(negative.any()):
            return
        positive = self.domain.margin0 > 0
        safe = self.domain.margin0 >= self.target_margin
        pool = self.domain.y0[safe] if int(safe.sum()) >= self.settings.k_nearest else self.domain.y0[positive]
        self.targets[negative] = imitation_targets(self.domain.y0[negative], pool, self.settings.k_nearest)

    def add_points(self, x: np.ndarray, with_neighbours: bool) -> int:
        """Add new points of the boxes (counterexamples or attack results) and, when asked, a cloud
        of points near each; returns how many points were added."""
        fresh = [p for p in np.atleast_2d(np.asarray(x, dtype=np.float64)) if p.tobytes() not in self.seen]
        if not fresh:
            return 0
        self.seen.update(p.tobytes() for p in fresh)
        cap = self.settings.max_added_points
        if len(fresh) > cap:
            fresh = [fresh[i] for i in np.sort(self.rng.choice(len(fresh), cap, replace=False))]
        points = [np.vstack(fresh)]
        if with_neighbours:
            each = min(self.settings.near_counterexample, max(0, (cap - len(fresh)) // len(fresh)))
            for region in self.spec.regions:
                inside = np.vstack(fresh)[contained(region.box, np.vstack(fresh))]
                points.append(near(inside, region.box, each, self.settings.near_spread, self.rng))
        added = self.evaluate(np.vstack(points))
        keep = added.member.any(dim=1)
        self.domain = SampleSet.concat(self.domain, added.take(torch.nonzero(keep).flatten()))
        self.refresh_targets()
        return int(keep.sum())
