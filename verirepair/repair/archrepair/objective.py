"""What the search and the fine-tuning learn from, and their loss.

* keep inputs (``--data``, else samples of the input space around the property's boxes): the
  network keeps the original's outputs (squared, in units of each input's output spread) and
  learns a decision by cross-entropy: towards each input's label where the data set gives labels
  (`ArchRepairSettings.label_weight`), so the repair can gain accuracy rather than only lose it,
  else towards the original's decision (every property here is about classifiers' or scorers' outputs);
* box inputs (uniform samples of the property's boxes, failing inputs: counterexamples and PGD
  points, each drawn as often as the uniform ones): a squared hinge pulls the property margin up
  to the target margin.
* the verifiability term (fine-tuning only): a squared hinge on a CROWN lower bound of the
  margin over each box of every property a candidate must be proven on (the suite's, those that
  held or were undecided too), so that the verifier finds them provable.

Each set is split once into a training part (weight steps) and a held-out part (architecture
steps). Keep inputs with labels first give up a validation split, never trained on, which judges
the fine-tuning's accuracy phase (`finetune`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...spec import Spec, disjunction_of
from ..birdnn.certified import certified_margins
from ..birdnn.domain import RegionTensors, default_input_space, uniform_in
from ..birdnn.samples import PropertyMargin
from ..input_domain import outside_boxes
from .settings import ArchRepairSettings
from .shifts import ImageShape, randomly_shifted, with_shifted_copies

Tensor = torch.Tensor
Model = Callable[[Tensor], Tensor]


class RepairSamples:
    def __init__(self, spec: Spec, original: Model, keep_inputs: np.ndarray | None, decision: str,
                 settings: ArchRepairSettings, suite: Sequence[Spec] = (), keep_labels: np.ndarray | None = None,
                 image_shape: ImageShape | None = None) -> None:
        self.spec, self.original, self.settings = spec, original, settings
        self.property = PropertyMargin(spec)
        # The properties the verifiability term bounds: the suite's (``spec`` among them), else ``spec``.
        self.verified = PropertyMargin(disjunction_of(list(suite), "suite")) if suite else self.property
        self.rng = np.random.default_rng(settings.seed)
        self.sign = -1.0 if decision == "argmin" else 1.0
        labels = None
        # The validation split (`ArchRepairSettings.validation_share` of labelled keep inputs): never trained on.
        self.validation_x: Tensor | None = None
        self.validation_y: Tensor | None = None
        # Labelled images: keep batches are shifted at random (`ArchRepairSettings.shift_pixels`).
        self.shift_shape: ImageShape | None = None
        if keep_inputs is not None:
            used = np.asarray(keep_inputs, dtype=np.float64).reshape(len(keep_inputs), -1)
            order = self.rng.permutation(len(used))
            every_label = None if keep_labels is None else checked_labels(keep_labels, len(used), spec.n_outputs)
            if every_label is not None and settings.validation_share > 0:
                split = round(settings.validation_share * len(used))
                self.validation_x = torch.tensor(used[order[:split]], dtype=torch.float32)
                self.validation_y = torch.from_numpy(every_label[order[:split]])
                order = order[split:]
            chosen = np.sort(order[:settings.keep_samples])
            keep = used[chosen]
            if every_label is not None and settings.label_weight > 0:
                labels = torch.from_numpy(every_label[chosen])
            if every_label is not None and image_shape is not None and settings.shift_pixels > 0:
                self.shift_shape = image_shape
        else:
            keep = outside_boxes(spec, default_input_space(spec, 0.5), settings.keep_samples, self.rng)
        self.keep_x = torch.tensor(keep, dtype=torch.float32)
        with torch.no_grad():
            self.keep_y0 = original(self.keep_x)
        # The decision each keep input is trained towards, and the weight of that cross-entropy.
        if labels is None:
            self.keep_label, self.label_weight = (self.sign * self.keep_y0).argmax(dim=1), settings.decision_weight
        else:
            self.keep_label, self.label_weight = labels, settings.label_weight
        # Output changes on keep inputs count in units of each input's own output spread: the
        # property's margin scale can be far smaller than the outputs' (a threshold close to the
        # outputs over a small box), and in its units keeping outputs would outweigh the repair.
        self.keep_spread = output_spread(self.keep_y0)
        self.keep_held_out = self._held_out(len(keep))
        boxes = np.vstack([uniform_in(r.box, settings.box_samples, self.rng) for r in spec.regions])
        self.seen: set[bytes] = set()
        self.box_x = torch.zeros((0, spec.n_inputs))
        self.box_member = torch.zeros((0, len(spec.regions)), dtype=torch.bool)
        self.box_held_out = torch.zeros(0, dtype=torch.bool)
        self.failing = torch.zeros(0, dtype=torch.bool)
        self.add(boxes)
        finite = self.margins(original)
        self.scale = max(float(finite[torch.isfinite(finite)].abs().median()), 1e-6)
        self.target = settings.target_margin * self.scale

    def _held_out(self, count: int) -> torch.Tensor:
        return torch.from_numpy(self.rng.random(count) < self.settings.held_out_share)

    def add(self, x: np.ndarray) -> int:
        """Add box points not added before (failing where the original violates; `mark_failing`
        adds where a later model does); returns how many new ones lie in some box."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        x = x[np.array([row.tobytes() not in self.seen for row in x], dtype=bool)].reshape(-1, self.spec.n_inputs)
        self.seen.update(row.tobytes() for row in x)
        member = self.property.membership(x)
        inside = member.any(dim=1)
        points = torch.tensor(x, dtype=torch.float32)[inside]
        self.box_x = torch.cat([self.box_x, points])
        self.box_member = torch.cat([self.box_member, member[inside]])
        self.box_held_out = torch.cat([self.box_held_out, self._held_out(len(points))])
        self.mark_failing(self.original)
        return int(inside.sum())

    def margins(self, model: Model) -> Tensor:
        with torch.no_grad():
            return self.property.margin(model(self.box_x), self.box_member)

    def mark_failing(self, model: Model) -> None:
        """Failing: the points where ``model`` (or an earlier one) violates the property."""
        now = self.margins(model) <= 0
        before = torch.cat([self.failing, torch.zeros(len(now) - len(self.failing), dtype=torch.bool)])
        self.failing = before | now

    def validation_accuracy(self, model: Model) -> float | None:
        """The share of the validation split, with its copies shifted by
        `ArchRepairSettings.shift_pixels` each way when keep batches are shifted, whose decision
        is its label; None without a split."""
        if self.validation_x is None or self.validation_y is None:
            return None
        x, y = self.validation_x, self.validation_y
        if self.shift_shape is not None:
            x, y = with_shifted_copies(x, self.shift_shape, self.settings.shift_pixels), y.repeat(5)
        with torch.no_grad():
            return float(((self.sign * model(x)).argmax(dim=1) == y).float().mean())

    def loss(self, model: Model, split: str, generator: torch.Generator, label_weight: float | None = None) -> Tensor:
        """The loss of a batch of ``split`` (``"train"`` or ``"held_out"``); ``label_weight``
        replaces the weight of the keep inputs' cross-entropy."""
        held = split == "held_out"
        label_weight = self.label_weight if label_weight is None else label_weight
        batch = self.settings.batch_size
        keep = torch.nonzero(self.keep_held_out == held).flatten()
        keep = keep[torch.randint(len(keep), (batch,), generator=generator)]
        x, y0, spread = self.keep_x[keep], self.keep_y0[keep], self.keep_spread[keep]
        if self.shift_shape is not None:
            x = randomly_shifted(x, self.shift_shape, self.settings.shift_pixels, generator)
            with torch.no_grad():
                y0 = self.original(x)
            spread = output_spread(y0)
        y = model(x)
        loss = self.settings.keep_weight * ((y - y0) / spread).pow(2).mean()
        loss = loss + label_weight * F.cross_entropy(self.sign * y, self.keep_label[keep])
        pool = torch.nonzero(self.box_held_out == held).flatten()
        failing = torch.nonzero(self.failing & (self.box_held_out == held)).flatten()
        rows = pool[torch.randint(len(pool), (batch,), generator=generator)]
        if len(failing):
            rows = torch.cat([rows, failing[torch.randint(len(failing), (batch,), generator=generator)]])
        margin = self.property.margin(model(self.box_x[rows]), self.box_member[rows])
        return loss + (torch.relu(self.target - margin) / self.scale).pow(2).mean()


def output_spread(y: Tensor) -> Tensor:
    """[N, 1]: each row's largest output less its smallest (at least 1e-6, a divisor)."""
    return (y.amax(dim=1) - y.amin(dim=1)).clamp(min=1e-6).unsqueeze(1)


def checked_labels(labels: np.ndarray, rows: int, n_outputs: int) -> np.ndarray:
    """``labels`` as int64 output indices, one per keep input; an `InputError` naming ``--data``
    when they are not."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != rows:
        raise InputError(None, "--data", f"{len(labels)} labels for {rows} inputs")
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise InputError(None, "--data", "labels must be whole numbers (output indices)")
    whole = labels.astype(np.int64)
    if np.any(whole < 0) or np.any(whole >= n_outputs):
        raise InputError(None, "--data", f"label {int(whole[(whole < 0) | (whole >= n_outputs)][0])} is not an output "
                         f"index of a network with {n_outputs} outputs")
    return whole


def crown_margins(module: torch.nn.Module, regions: Sequence[RegionTensors]) -> Tensor:
    """[len(regions)]: a CROWN lower bound of the property margin over each region's box."""
    return torch.cat([certified_margins(module, region, torch.tensor(region.box.lower, dtype=torch.float32).unsqueeze(0),
                                        torch.tensor(region.box.upper, dtype=torch.float32).unsqueeze(0))
                      for region in regions])


def regions_at_risk(module: torch.nn.Module, samples: RepairSamples, settings: ArchRepairSettings) -> list[RegionTensors]:
    """The boxes of `RepairSamples.verified` whose bound lies below twice the verifiability
    target: the only ones the hinge can reach within a round of small steps, so the only ones
    worth bounding (with gradients) at every step."""
    with torch.no_grad():
        bounds = crown_margins(module, samples.verified.regions)
    limit = 2 * settings.verifiable_target * samples.target
    return [region for region, bound in zip(samples.verified.regions, bounds.tolist()) if bound < limit]


def verifiable_shortfall(module: torch.nn.Module, samples: RepairSamples, settings: ArchRepairSettings,
                         regions: Sequence[RegionTensors] | None = None) -> Tensor:
    """Squared hinge (in margin scales) of a CROWN lower bound of the property margin over each
    box of `RepairSamples.verified`, below `ArchRepairSettings.verifiable_target` target margins,
    averaged over those boxes; with ``regions``, only those boxes count (the others as 0)."""
    every = samples.verified.regions
    chosen = every if regions is None else regions
    if not chosen:
        return torch.zeros(())
    bounds = crown_margins(module, chosen)
    return (torch.relu(settings.verifiable_target * samples.target - bounds) / samples.scale).pow(2).sum() / len(every)
