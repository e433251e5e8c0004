"""INNER's two input sets in verirepair's terms.

*Failing inputs* are the verifier's counterexamples plus points that projected gradient descent
(`birdnn.attack.low_margin_points`) finds in the property's boxes below a margin; each is labelled
with the label its region protects (the region, among those whose box holds it, where its margin
is smallest). *Clean inputs* are the `--data` set's inputs (else uniform samples of the domain,
or of the boxes' widened hull, outside the boxes) plus uniform samples of the boxes where the
original network satisfies the property; the original network's decisions and outputs on them are
the behaviour the repair keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...spec import Box, Spec
from ..birdnn.attack import low_margin_points
from ..birdnn.domain import contained, default_input_space, uniform_in
from ..birdnn.samples import PropertyMargin
from ..input_domain import outside_boxes
from ..parameters import TrainableNetwork

Tensor = torch.Tensor
HULL_WIDEN = 0.5  # without data or domain: clean samples come from the boxes' hull widened by this many widths


@dataclass
class LabelledInputs:
    x: Tensor  # [N, n] flat inputs
    labels: Tensor  # [N] the label each should get

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def extended(self, other: LabelledInputs) -> LabelledInputs:
        return LabelledInputs(torch.cat([self.x, other.x]), torch.cat([self.labels, other.labels]))


def region_labels(prop: PropertyMargin, labels: tuple[int, ...], x: Tensor, y: Tensor) -> Tensor:
    """[N]: the protected label of the region where each point's margin is smallest among the
    regions whose box holds it (every point must lie in some box)."""
    member = prop.membership(x.double().numpy())
    margins = torch.stack([region.margin(y) for region in prop.regions], dim=1)
    weakest = torch.where(member, margins, torch.full_like(margins, torch.inf)).argmin(dim=1)
    return torch.tensor(labels, dtype=torch.long)[weakest]


def labelled_failing(module: TrainableNetwork, prop: PropertyMargin, labels: tuple[int, ...], x: np.ndarray) -> LabelledInputs:
    """Points of the boxes with their protected labels (judged on ``module``'s outputs)."""
    points = torch.tensor(np.asarray(x, dtype=np.float64).reshape(-1, prop.spec.n_inputs), dtype=module.dtype)
    with torch.no_grad():
        outputs = module(points)
    return LabelledInputs(points, region_labels(prop, labels, points, outputs))


def attacked(module: TrainableNetwork, prop: PropertyMargin, labels: tuple[int, ...], seeds: Tensor, starts: int,
             steps: int, threshold: float, rng: np.random.Generator) -> LabelledInputs:
    """PGD points of the boxes where ``module``'s margin is below ``threshold``, labelled."""
    found = low_margin_points(module, prop, seeds, starts, steps, threshold, rng)
    return labelled_failing(module, prop, labels, found)


@dataclass(frozen=True)
class CleanInputs:
    """Clean inputs with the original network's outputs and decisions on them: the first
    ``outside`` rows are the data set's inputs (or samples outside the boxes), the rest samples of
    the boxes where the original satisfies the property."""

    x: Tensor  # [N, n]
    outputs: Tensor  # [N, m]
    outside: int

    @property
    def labels(self) -> Tensor:
        return self.outputs.argmax(dim=1)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, size: int, outside_share: float, rng: np.random.Generator) -> Tensor:
        """Row indices of a batch of ``size``: ``outside_share`` of it from the outside rows, the
        rest from the box rows (all from one part when the other is empty).

        The box samples of a suite of properties can outnumber the data set's inputs; drawn
        uniformly they would fill most of each batch, and the clean terms would keep the boxes'
        behaviour rather than the network's accuracy where it is used."""
        parts = [np.arange(self.outside), np.arange(self.outside, len(self))]
        wanted = [round(size * outside_share), size - round(size * outside_share)]
        if not len(parts[0]) or not len(parts[1]):
            parts, wanted = [np.arange(len(self))], [size]
        chosen = [rng.choice(part, min(want, len(part)), replace=False) for part, want in zip(parts, wanted)]
        return torch.from_numpy(np.concatenate(chosen))


def clean_inputs(original: TrainableNetwork, spec: Spec, keep_inputs: np.ndarray | None, domain: Box | None,
                 count: int, box_samples: int, rng: np.random.Generator) -> CleanInputs:
    """Clean inputs and the original network's outputs on them (see the module docstring)."""
    if keep_inputs is not None:
        used = np.asarray(keep_inputs, dtype=np.float64).reshape(len(keep_inputs), -1)
        used = used[np.sort(rng.permutation(len(used))[:count])]
    else:
        used = outside_boxes(spec, domain or default_input_space(spec, HULL_WIDEN), count, rng)
    prop = PropertyMargin(spec, torch.float64)
    inside = np.vstack([uniform_in(region.box, box_samples, rng) for region in spec.regions])
    member = torch.from_numpy(np.stack([contained(region.box, inside) for region in spec.regions], axis=1))
    with torch.no_grad():
        outputs = original(torch.tensor(inside, dtype=original.dtype)).double()
    safe = inside[(prop.margin(outputs, member) > 0).numpy()]
    x = torch.tensor(np.vstack([used, safe]), dtype=original.dtype)
    with torch.no_grad():
        return CleanInputs(x, original(x), len(used))
