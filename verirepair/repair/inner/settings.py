"""INNER settings: one frozen, typed object (a misspelled option is a TypeError)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import SettingsError


@dataclass(frozen=True)
class InnerSettings:
    # ---- inputs ------------------------------------------------------------------------------
    clean_inputs: int = 10_000  # clean inputs at most (the data set's, else samples), for probes and keeping behaviour
    box_samples: int = 500  # uniform samples of each property box; those the original gets right are clean inputs
    attack_starts: int = 256  # PGD starts per violated box (uniform points and failing inputs)
    attack_steps: int = 30  # PGD steps per start
    # ---- probes --------------------------------------------------------------------------------
    probe_epochs: int = 200  # full-batch Adam steps of each layer's linear probe (the network frozen)
    probe_rate: float = 0.05  # Adam's learning rate for the probes (features are standardised)
    # ---- localisation --------------------------------------------------------------------------
    ranking_inputs: int = 30  # clean and failing inputs each, for the layer ranking
    # How many of the top-ranked layers are repaired, and the share of each one's weights in its
    # fault set. INNER repairs one layer's few most routing weights; a suite of robustness
    # properties asks more of the repair than those weights can give without moving the decisions
    # of clean inputs, so a larger set is trained and the clean terms keep the rest.
    repair_layers: int = 2
    fault_share: float = 0.3  # the most routing weights first
    routing_inputs: int = 30  # failing inputs whose soft masks are counted
    routing_steps: int = 40  # gradient steps of each soft mask
    routing_rate: float = 0.05  # Adam's learning rate for the masks (init 1, clipped to [0, 1])
    routing_l1: float = 1e-3  # weight of the L1 pull of the mask towards 0 (per weight)
    # After a candidate that was not proven, the next call's fault set is this many times larger
    # (up to the whole layer). 1 keeps it: the next call trains the same weights on more failing
    # inputs; a fault set grown to whole layers changes so many weights that the verifier times
    # out on the candidates.
    fault_growth: float = 1.0
    # ---- masked optimisation ---------------------------------------------------------------------
    failing_weight: float = 0.8  # weight of CE(failing inputs -> the label the property protects)
    distillation_weight: float = 0.2  # weight of distillation towards the original on clean inputs
    temperature: float = 3.0  # distillation temperature T
    # Adam's learning rate as a share of the mean |weight| of the layer repaired (networks differ
    # in weight scale by orders of magnitude).
    rate_share: float = 0.02
    steps_per_round: int = 100  # alternating step pairs (failing + distillation, clean CE) per round
    batch_size: int = 256  # clean inputs per step
    # Share of each clean batch drawn from the data set's inputs (or the samples outside the
    # boxes); the rest are box samples where the original satisfies the property.
    data_share: float = 0.4
    max_rounds: int = 20  # rounds of (optimise, PGD search for new failing inputs) per repair call
    # A PGD point joins the failing inputs while its property margin (logit gap of the protected
    # label) is below this; a margin > 0 on samples leaves the verifier room between them. A
    # training target, not a soundness tolerance: the loop verifies the exported file.
    attack_margin: float = 1.0
    # ---- margin-preserving recovery (not in INNER; `optimise.margin_preserving_recovery`) ----------
    recovery_rounds: int = 3  # rounds of (recovery steps, PGD search) after the repair steps settle
    recovery_steps: int = 200  # steps per recovery round
    recovery_rate: float = 0.5  # learning rate as a share of the repair steps'
    recovery_margin: float = 1.5  # the margin the hinge holds failing inputs at (above attack_margin)
    recovery_hinge_weight: float = 4.0  # weight of the hinge against the clean terms
    recovery_failing_batch: int = 1024  # failing inputs per recovery step
    # ---- verifiability (not in INNER; `optimise.verifiability_shortfall`) ---------------------
    # Weight of the hinge on the CROWN lower bound of the property margin over each region's
    # whole box, switched on after the verifier could not decide a candidate (0: never).
    verifiable_weight: float = 1.0
    verifiable_target: float = 0.0  # the bound the hinge asks for (> 0: CROWN alone proves the region)
    # ---- time ------------------------------------------------------------------------------------
    max_seconds: float = 120.0  # CPU seconds of this process per repair call (`strategy.call_budget`)
    deadline_share: float = 0.6  # at most this share of the loop's remaining time per repair call
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.fault_share <= 1:
            raise SettingsError(f"fault_share must be in (0, 1], got {self.fault_share}")
        if self.repair_layers < 1:
            raise SettingsError(f"repair_layers must be at least 1, got {self.repair_layers}")
        if not 0 <= self.data_share <= 1:
            raise SettingsError(f"data_share must be in [0, 1], got {self.data_share}")
        if self.recovery_margin < self.attack_margin:
            raise SettingsError(f"recovery_margin ({self.recovery_margin}) must be at least attack_margin "
                                f"({self.attack_margin}): recovery would undo what the search asks for")
        if self.fault_growth < 1:
            raise SettingsError(f"fault_growth must be at least 1, got {self.fault_growth}")
