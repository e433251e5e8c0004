"""ArchRepair settings: one frozen, typed object (a misspelled option is a TypeError, an
operation the bound graph cannot bound a `SettingsError`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import SettingsError
from .operations import check_operations

DENSE_OPERATIONS = ("zero", "identity", "dense_relu", "dense_relu_wide")
CONV_OPERATIONS = ("zero", "identity", "conv3x3_relu", "conv1x1_relu", "avgpool3x3")


@dataclass(frozen=True)
class ArchRepairSettings:
    # ---- failing and passing inputs ------------------------------------------------------------
    box_samples: int = 2000  # uniform samples of each property box (passing ones, and failing ones found)
    attack_starts: int = 256  # PGD starts per box for failing inputs
    attack_steps: int = 30
    keep_samples: int = 2000  # inputs whose behaviour is kept (from --data, else drawn around the boxes)
    localise_samples: int = 256  # failing and passing inputs each, at most, for localisation (one backward pass each)
    # ---- search space ----------------------------------------------------------------------------
    # The block to repair, named by its output value (e.g. ``conv1.relu``); empty: the
    # highest-scoring block of the localisation that the cell can replace.
    block: str = ""
    dense_operations: tuple[str, ...] = DENSE_OPERATIONS
    conv_operations: tuple[str, ...] = CONV_OPERATIONS
    # Softmax logit given at the start to the operation that makes the cell the original block
    # (the original layer on the first edge, zero on the skip edge, identity on the last edge);
    # the other operations start at 0, so the relaxed cell starts close to the original block.
    warm_logit: float = 2.0
    # Keep inputs with labels: the original layer on the first edge is widened to this many times
    # its outputs (channels), followed by a layer back to its width (a 1×1 convolution for conv
    # blocks), each with a Relu; it starts computing exactly the original layer
    # (`operations.widened`), and the new outputs give the labels room to raise accuracy.
    # 1: the original layer as it is (so without labels).
    widen: int = 2
    # Keep inputs with labels on an image network (input [1, C, H, W]): each keep batch is
    # shifted by whole pixels drawn from [-shift_pixels, shift_pixels] per axis (zero fill; the
    # kept outputs are the original's on the shifted images), and the accuracy phase judges on
    # the validation split with its copies shifted this far up, down, left and right, which the
    # original (trained on these digits) does not fit perfectly. 0: no shifts.
    shift_pixels: int = 1
    # ---- optimisation ----------------------------------------------------------------------------
    search_steps: int = 150  # alternating weight and architecture steps
    finetune_steps: int = 300  # per repair call, after the strongest operation per edge is kept
    # Keep inputs with labels: before the first fine-tuning round of a new cell, this many steps
    # of the loss without the verifiability term (no bound per step, so about twenty times
    # cheaper), in which the labels, the shifts and the widened layer raise accuracy.
    label_steps: int = 600
    batch_size: int = 256
    weight_rate: float = 3e-3
    architecture_rate: float = 3e-2
    held_out_share: float = 0.3  # of the samples, for the architecture steps
    # Property margin every failing input and box sample is pulled up to, in units of the median
    # |margin| of the original over the boxes: room for the verifier between the samples.
    target_margin: float = 0.3
    keep_weight: float = 1.0  # keep inputs keep the original's outputs (squared, in their output spreads)
    decision_weight: float = 1.0  # ... and its decision (cross-entropy on the original's arg-max)
    # Keep inputs with labels (the data set's ``y``): the cross-entropy goes towards the label
    # instead of the original's decision, with this weight; 0: the original's decision, as without labels.
    label_weight: float = 1.0
    # Verifiability: a hinge on a CROWN lower bound of the property margin over each box of every
    # property a candidate must be proven on (a suite's, those that held included)
    # (the bound the verifier starts from), pulled up to this fraction of the target margin.
    # 0 turns it off.
    verifiable_weight: float = 1.0
    verifiable_target: float = 0.25
    # ---- accuracy phase (polishing after a proof) ----------------------------------------------
    # Keep inputs with labels: this share of them is a validation split, drawn before the keep
    # samples and never trained on; it judges the accuracy phase (0: no split, no accuracy phase).
    validation_share: float = 0.2
    # After a proof the cell trains on from the proven weights for `accuracy_rounds` rounds of
    # `accuracy_steps` steps, the cross-entropy towards the labels at `accuracy_label_weight`
    # (the verifiability term and the box hinge still on). A round's weights count only when PGD
    # finds no failing point and no box's CROWN bound lies below the lower of its proven bound and
    # 0 (a box CROWN proved stays proved by it, no other gets a lower bound); of those and the
    # proven weights, the most accurate on the validation split is the polished candidate when it
    # beats the proven weights (`finetune.accuracy_rounds`). 0 rounds: no accuracy phase.
    accuracy_rounds: int = 6
    accuracy_steps: int = 150
    accuracy_label_weight: float = 1.0
    accuracy_rate: float = 1e-3  # Adam's learning rate in the accuracy phase (small steps from proven weights)
    # CPU seconds per accuracy phase (instead of `max_seconds`; also at most `deadline_share` of the
    # loop's remaining time): its steps bound the boxes, and each round gains a little.
    accuracy_seconds: float = 360.0
    # ---- time ------------------------------------------------------------------------------------
    max_seconds: float = 120.0  # CPU seconds of this process per repair call (`strategy.call_budget`)
    deadline_share: float = 0.6  # at most this share of the loop's remaining time per repair call
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_operations(self.dense_operations, "dense")
        check_operations(self.conv_operations, "conv")
        if self.widen < 1 or self.shift_pixels < 0:
            raise SettingsError(f"widen must be at least 1 and shift_pixels at least 0, got {self.widen} and {self.shift_pixels}")
        if not 0.0 < self.held_out_share < 1.0:
            raise SettingsError(f"held_out_share must lie within (0, 1), got {self.held_out_share}")
        if not 0.0 <= self.validation_share < 1.0:
            raise SettingsError(f"validation_share must lie within [0, 1), got {self.validation_share}")
        if self.accuracy_rounds < 0 or self.accuracy_steps < 1:
            raise SettingsError(f"accuracy_rounds must be at least 0 and accuracy_steps at least 1, got "
                                f"{self.accuracy_rounds} and {self.accuracy_steps}")
