"""Verification settings: one frozen, typed object passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingsError


@dataclass(frozen=True)
class VerifySettings:
    timeout: float = 60.0
    device: str = "cpu"
    # On a CUDA device the process may hold at most this much device memory (GiB); a search that
    # needs more gives up on its region (unknown), as on the CPU, where the frontier caps keep an
    # instance under ~4 GB. Without the cap a fast device grows the frontiers of several instances
    # sharing it until one of them fails.
    device_memory_gib: float = 4.0
    seed: int = 0
    # Falsification: uniform samples, then projected gradient descent on the violation margin.
    random_samples: int = 2000
    pgd_restarts: int = 64
    pgd_steps: int = 60
    # The descent on the leaky-ReLU surrogate after the plain one (`falsify.candidate_points`)
    # runs for low-dimensional regions only when the plain descent got stuck (input split, which
    # follows, probes every box it bounds); True: whenever it is cheap, as for many inputs.
    surrogate_before_input_split: bool = False
    # Incomplete bounds before the complete search.
    alpha_steps: int = 30
    # Many-input regions: α-CROWN steps for every intermediate layer's bounds (0: plain CROWN),
    # when CROWN's intermediate bounds leave a clause open and the network has at most
    # `intermediate_alpha_max_neurons` neurons in non-linear nodes. Optimising every neuron of every
    # layer costs about rows × neurons behind it per step: on sri_resnet_a (115k ReLUs, 2 CPU
    # threads) 330 s against 11 s for CROWN, more than the instance's timeout; mnist_fc and eran
    # (1.5k-1.8k neurons) gain from it at a few seconds' cost.
    intermediate_alpha_steps: int = 20
    intermediate_alpha_max_neurons: int = 20_000
    # Networks with sigmoid/tanh have no exact search to fall back on, so while a clause is open
    # the intermediate bounds are re-optimised with these longer α-CROWN runs, one after the
    # other, before activation splitting. 20 steps leave them far from converged there: on eran's
    # 6x200 sigmoid net (one thread) image 4214's weakest clause is -0.97 after 20 steps, +0.67
    # after 60 (17 s), and image 9044's -6.98, -3.78 and -2.93 after 20, 60 and 150 (46 s). On
    # ReLU nets the same runs gain little (eran 9x200 image 2954: -42.1 -> -41.6), so they are
    # not used there.
    sshaped_alpha_escalation: tuple[int, ...] = (60, 150)
    # Many-input ReLU networks: ReLU-split BaB gets this share of the time per open clause before
    # the exact MILP takes what it leaves (0: MILP only); the same with a certificate requested,
    # where it starts from the same root bounds and the MILP's answers are listed as solver-trusted.
    relu_split_share: float = 0.3
    # Many-input sigmoid/tanh networks with a certificate requested: activation split, from the root
    # bounds of the uncertified search (α-CROWN's, escalated; recorded as lemmas), gets this share
    # of the time per clause; what it leaves open is decided without a certificate, with the rest.
    # A region those bounds decide has a certificate as soon as they are computed: each clause's
    # tree is its root (eran's sigmoid image 4214, decided by the 60-step α-CROWN run).
    certificate_activation_split_share: float = 0.5
    # ReLU split's branching: the best-scored neurons (BaBSR-like score) each domain tries, keeping
    # the one whose worse child's one-pass CROWN bound is highest (filtered smart branching); 1:
    # the best-scored neuron, untried. Trying costs 2k CROWN passes per domain and decided no
    # more mnist_fc instances (docs/algorithms.md, ReLU split), so it is off.
    relu_split_candidates: int = 1
    # Many-input ReLU MLPs whose weakest open clause's α-CROWN bound is below -milp_refine_gap: the
    # unstable neurons of hidden layers 2 … 1 + milp_refine_layers are bounded by exact MILPs of the
    # layers before them (at most milp_refine_neuron_seconds each), within milp_refine_share of the
    # region's time, before the ReLU split (0 layers: never). Small gaps are left to ReLU split,
    # which closes them faster (eran 9x200 image 186, bound -0.72, proven in 4.7 s).
    # Measured on eran 9x200 image 2954 (bound -42.1, one thread): 2 layers, 1 s each, 30 % of the
    # time: -10.6; 2 layers, 2 s, 60 %: -7.3; 3 layers, 3 s, 70 %: -0.99 and proven by ReLU split in
    # 212 s. Deeper layers' MILPs need seconds before their bound beats α-CROWN's. The gap was 3
    # until eran image 2971 (bound -2.16; session 11: 58 s) timed out at 300 s on one loaded thread;
    # with refinement its bound becomes +0.11 and it is proven in 216 s. On eran no other ReLU
    # instance has a bound in [-3, -0.72); on mnist_fc the two unsat ones in [-3, -2) time out
    # either way (256x4 prop_0_0.05: refinement gets -2.25 to -2.14).
    milp_refine_layers: int = 3
    milp_refine_gap: float = 2.0
    milp_refine_neuron_seconds: float = 3.0
    milp_refine_share: float = 0.7
    # Each side's MILP stops as soon as it decides the neuron's sign (bound clears zero: stable, the
    # other side is skipped; a point beyond zero: unstable), instead of solving for the exact bound.
    milp_refine_early_stop: bool = True
    # Input split refines the bounds of the boxes it takes up by this many α-CROWN steps (0: off;
    # with a certificate requested only on ReLU networks, whose certificate records the slopes a
    # closing used). Measured with
    # 10 steps, one thread: a BIRDNN-repaired ACAS Xu network (N2,5 property 2, thin margins)
    # proven in 124 s instead of 170 s (5 steps: 150 s, 20: 137 s); the 186 ACAS Xu instances in
    # 266 s of verifier time instead of 291 s.
    leaf_alpha_steps: int = 10
    # Input-split branch and bound is used up to this many input dimensions; MILP above it.
    input_split_max_dims: int = 10
    # Boxes bounded per input-split iteration, at most.
    split_batch: int = 2048
    # Low-dimensional regions go straight to input split, which bounds the whole box by CROWN and
    # refines it by `leaf_alpha_steps` of α-CROWN before splitting. True: the whole box's
    # `alpha_steps` of α-CROWN come first, as for many inputs (what input split's first iteration
    # repeats, at several times its cost).
    root_alpha_before_input_split: bool = False
    # Input split tries this many dimensions per box (best by |coefficient|·width), bounding both
    # halves of each, and keeps the split whose halves bound best. On ACAS Xu (5 inputs) trying
    # all five beats three: 4_2 property 2 in 48 s instead of 96 s, the 186 instances in 249 s
    # of verifier time instead of 326 s.
    split_candidates: int = 5
    # Input split on piecewise-linear networks decides a box by MILP once it has at most this many
    # unstable ReLUs (0: never), after this many boxes were bounded (-1: never). Since boxes are
    # α-CROWN-refined and bounded within their parents' bounds, splitting closes ACAS Xu's boxes
    # faster than leaf MILPs do: the 186 instances took 236 s of CPU without them against 302 s
    # with them from the first box (`tools/bench_acasxu_cpu.py`, all instances, one run each),
    # 4_2/prop_2 44 s against 65 s; so they start only in long searches. A box a leaf MILP decides
    # is listed in a certificate as resting on the solver.
    leaf_milp_max_unstable: int = 64
    leaf_milp_after_boxes: int = 200_000
    # Leaf MILPs solved at once, each on one thread (0: as many as torch's thread count).
    leaf_milp_workers: int = 0
    # A row is proven positive only when its lower bound exceeds this. Every bound has already been
    # lowered by its own float64 rounding error, derived from the magnitudes involved
    # (`bounds.rounding`), so this is not what makes a bound sound; it is a gap that keeps a closed
    # clause closed when the certificate checker, accepting any positive bound, re-derives it with
    # its own rounding error bounds.
    decision_margin: float = 1e-9
    # Violation rows are relaxed inside the MILP by this much relative to their magnitude
    # (A_r·y <= b_r + margin·(1 + reach_r), `milp.encode_graph`), so a solver's tolerances, which
    # grow with the magnitudes in the model, cannot turn a reachable violation into "infeasible".
    milp_margin: float = 1e-6
    # The exact MILP has a variable per value the network computes: networks that compute more
    # (CIFAR ResNets: ~10^5 and more) get none, since building it would take the time and memory
    # the other searches need, and no solver decides it within a timeout.
    milp_max_activations: int = 100_000
    milp_solver: str = "auto"
    # Points of each input box on which the torch import is compared with onnxruntime.
    import_check_points: int = 16

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise SettingsError(f"timeout must be positive, got {self.timeout}")
        if self.relu_split_candidates < 1:
            raise SettingsError(f"relu_split_candidates must be at least 1, got {self.relu_split_candidates}")
