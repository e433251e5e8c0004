"""The verification strategy: falsify → incomplete bounds → complete search.

Regions of a spec are independent: the property holds iff every region is proven; it is violated
as soon as one counterexample is confirmed by onnxruntime on the original file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bounds import BoundEngine, LayerBounds, build_graph
from ..bounds.engine import IntermediateSlopes
from ..errors import InputError
from ..milp import solver_named
from ..network import Network, check_import_agrees, load_network
from ..spec import Region, Spec, parse_vnnlib
from .activation_split import activation_split_search
from .certificate import RegionCertificate, ReluClauseProof, ReluLeafRecord
from .clause_search import ClauseSearch, search_clauses
from .deadline import Deadline
from .falsify import candidate_points
from .input_split import input_split_search
from .lemmas import RootLemmas
from .milp_refine import milp_refined_layers
from .milp_search import milp_search
from .objective import RegionRows, box_tensors, clause_lower_bounds, still_open
from .relu_split import relu_split_search
from .result import Counterexample, SearchOutcome, Verdict
from .settings import VerifySettings
from .witness import confirmed_counterexample

logger = logging.getLogger(__name__)

def load_problem(onnx_path: str | Path, vnnlib_path: str | Path, settings: VerifySettings) -> tuple[Network, Spec]:
    """Load both files, check their sizes agree and the import matches onnxruntime on every box."""
    network = load_network(onnx_path)
    spec = parse_vnnlib(vnnlib_path, n_inputs=network.n_inputs, n_outputs=network.n_outputs)
    check_problem(network, spec, settings)
    return network, spec


def check_problem(network: Network, spec: Spec, settings: VerifySettings) -> None:
    """Refuse a pair whose sizes differ, or a network whose import disagrees with onnxruntime on
    a region's box: every proof is about the import, so it must be the file's semantics."""
    if (spec.n_inputs, spec.n_outputs) != (network.n_inputs, network.n_outputs):
        raise InputError(spec.source, None, f"the property has {spec.n_inputs} inputs and {spec.n_outputs} outputs, "
                                            f"the network {network.n_inputs} and {network.n_outputs}")
    for region in spec.regions:
        check_import_agrees(network, region.box.lower, region.box.upper, settings.import_check_points, seed=settings.seed)


def verify_files(onnx_path: str | Path, vnnlib_path: str | Path, settings: VerifySettings,
                 certificate: list[RegionCertificate | None] | None = None) -> Verdict:
    deadline = Deadline(settings.timeout)
    network, spec = load_problem(onnx_path, vnnlib_path, settings)
    return verify(network, spec, settings, deadline, certificate)


def verify(network: Network, spec: Spec, settings: VerifySettings, deadline: Deadline | None = None,
           certificate: list[RegionCertificate | None] | None = None) -> Verdict:
    """Decide ``spec`` on ``network``; `sat` only with an onnxruntime-confirmed counterexample.

    With ``certificate`` (a list), one entry per region is appended: the region's proof
    certificate, or None where the region was decided by a method that does not produce one.
    """
    if settings.milp_solver != "auto":
        solver_named(settings.milp_solver)  # a back end asked for by name is there before any work is done
    deadline = deadline or Deadline(settings.timeout)
    device = torch.device(settings.device)
    _cap_device_memory(device, settings.device_memory_gib)
    engine = BoundEngine(build_graph(network).to(device), stop=deadline.expired)
    generator = torch.Generator().manual_seed(settings.seed)
    region_rows = [RegionRows.of(region, spec.n_outputs, device) for region in spec.regions]

    for region, rows in zip(spec.regions, region_rows):
        for point in candidate_points(engine.graph, rows, region.box, settings, deadline, generator)[:8]:
            found = confirmed_counterexample(network, spec, region.box, point)
            if found is not None:
                return Verdict("sat", "falsification", deadline.elapsed(), found)

    undecided: list[str] = []
    notes: list[str] = []
    deciders: set[str] = set()
    rests_on_solver = False
    for number, (region, rows) in enumerate(zip(spec.regions, region_rows), start=1):
        if deadline.expired():
            return Verdict("timeout", "deadline", deadline.elapsed(), notes=tuple(notes))
        out_of_memory = False
        try:
            outcome, decider = _decide_region(network, spec, engine, region, rows, settings, deadline, notes, certificate)
        except torch.OutOfMemoryError:
            notes.append(f"device memory ({settings.device_memory_gib:g} GiB) ran out on a region: left undecided")
            outcome, decider, out_of_memory = SearchOutcome("unknown", None, 0), "none", True
        if out_of_memory and torch.cuda.is_available():
            torch.cuda.empty_cache()  # after the except block, whose traceback held the search's tensors
        logger.info("region %d of %d: %s by %s after %.2f s", number, len(spec.regions),
                    outcome.status, decider, deadline.elapsed())
        if outcome.status == "sat":
            assert outcome.counterexample is not None
            return Verdict("sat", decider, deadline.elapsed(), outcome.counterexample, tuple(notes))
        if outcome.status == "proven":
            deciders.add(decider)
            rests_on_solver = rests_on_solver or outcome.solver_decided
        else:
            undecided.append(outcome.status)
    if not undecided:
        return Verdict("unsat", "+".join(sorted(deciders)), deadline.elapsed(), notes=tuple(notes),
                       rests_on_solver=rests_on_solver)
    status = "timeout" if "timeout" in undecided or deadline.expired() else "unknown"
    return Verdict(status, "undecided", deadline.elapsed(), notes=tuple(notes))


def _cap_device_memory(device: torch.device, gib: float) -> None:
    """Limit this process's share of a CUDA device (process-wide; the latest call wins)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), index)


def _decide_region(network: Network, spec: Spec, engine: BoundEngine, region: Region, rows: RegionRows,
                   settings: VerifySettings, deadline: Deadline, notes: list[str],
                   certificate: list[RegionCertificate | None] | None) -> tuple[SearchOutcome, str]:
    def confirm(x: np.ndarray) -> Counterexample | None:
        return confirmed_counterexample(network, spec, region.box, x)

    if rows.empty_clause:
        notes.append("a clause with no output constraint could not be confirmed on a box point")
        return SearchOutcome("unknown", None, 0), "none"
    roots: list[RootBounds] = []  # escalated root bounds the certified activation split computed, reused below
    if certificate is not None:
        if engine.graph.is_mlp and spec.n_inputs <= settings.input_split_max_dims:
            # straight to the split tree: its closings are what the checker re-checks
            certificate.append(RegionCertificate())
            return input_split_search(engine, rows, region, settings, deadline, confirm, certificate[-1]), "input-split"
        if engine.graph.is_relu_mlp:
            certificate.append(RegionCertificate(relu_clauses=[]))
            return _certified_split(relu_split_search, "relu-split", engine, region, rows, settings, deadline, confirm,
                                    notes, certificate[-1])
        if engine.graph.is_mlp:
            certificate.append(RegionCertificate(relu_clauses=[], method="activation-split"))
            outcome, decider = _certified_split(activation_split_search, "activation-split", engine, region, rows,
                                                settings, deadline, confirm, notes, certificate[-1], roots)
            if outcome.status in ("proven", "sat") or deadline.expired():
                return outcome, decider
            certificate[-1] = None
            notes.append("no certificate for this region: the certifiable activation split left a clause open")
        else:
            certificate.append(None)
            notes.append("no certificate for this region: only proofs on networks that are chains of dense layers "
                         "with ReLU, sigmoid or tanh activations are certified")

    lower, upper = box_tensors(region.box, rows.A.device)
    low_dimensional = spec.n_inputs <= settings.input_split_max_dims
    if low_dimensional and not settings.root_alpha_before_input_split:
        # input split bounds the whole box first, α-CROWN refining it (leaf_alpha_steps)
        return input_split_search(engine, rows, region, settings, deadline, confirm), "input-split"
    root = roots[0] if roots else _root_bounds(engine, region, rows, settings, deadline, notes,
                                               many_inputs=not low_dimensional)
    layers, clause_bounds, refined, graph = root.layers, root.clause_bounds, root.refined, engine.graph
    open_clauses = _open(clause_bounds, settings)
    if not open_clauses:
        return SearchOutcome("proven", None, 1, solver_decided=refined), "milp-bounds" if refined else "alpha-crown"
    if low_dimensional:
        return input_split_search(engine, rows, region, settings, deadline, confirm), "input-split"
    if graph.is_relu_network and settings.relu_split_share > 0:
        found, open_clauses = search_clauses(relu_split_search, settings.relu_split_share, engine, rows, open_clauses,
                                             layers, lower, upper, settings, deadline, confirm)
        if found is not None:
            return found, "relu-split"
        if not open_clauses:
            return SearchOutcome("proven", None, 1, solver_decided=refined), "relu-split"
    if graph.is_piecewise_linear and graph.activations <= settings.milp_max_activations:
        return milp_search(engine, region, open_clauses, layers, settings, deadline, confirm, notes), "milp"
    if graph.is_piecewise_linear:
        notes.append(f"no exact MILP: the network computes {graph.activations} values "
                     f"(more than milp_max_activations = {settings.milp_max_activations})")
        return SearchOutcome("timeout" if deadline.expired() else "unknown", None, 1), "none"
    # No exact search without piecewise linearity: longer bound optimisations first, then
    # splitting sigmoid/tanh neurons gets the rest of the time.
    if not roots:
        layers, clause_bounds = _escalated_bounds(engine, rows, lower, upper, layers, clause_bounds, settings, deadline,
                                                  notes)
    open_clauses = _open(clause_bounds, settings)
    if not open_clauses:
        return SearchOutcome("proven", None, 1), "alpha-crown"
    found, open_clauses = search_clauses(activation_split_search, 1.0, engine, rows, open_clauses, layers, lower, upper,
                                         settings, deadline, confirm)
    if found is not None:
        return found, "activation-split"
    if not open_clauses:
        return SearchOutcome("proven", None, 1), "activation-split"
    if deadline.expired():
        return SearchOutcome("timeout", None, 1), "none"
    notes.append("activation splitting could not close the region (not piecewise linear: no exact search)")
    return SearchOutcome("unknown", None, 1), "none"


@dataclass(frozen=True)
class RootBounds:
    layers: LayerBounds  # of every ReLU/activation input on the region's box
    clause_bounds: list[float]  # each clause's α-CROWN bound (> decision margin: refuted)
    refined: bool  # some bound was tightened by a MILP solver


def _root_bounds(engine: BoundEngine, region: Region, rows: RegionRows, settings: VerifySettings, deadline: Deadline,
                 notes: list[str], many_inputs: bool, lemmas: RootLemmas | None = None) -> RootBounds:
    """The region's box bounded by CROWN, each clause by α-CROWN; with ``many_inputs``, while a
    clause is open, every intermediate bound optimised by α-CROWN too, and then, on ReLU networks
    whose weakest clause is below ``-milp_refine_gap``, tightened by MILP (`milp_refined_layers`)
    within ``milp_refine_share`` of the time. Many inputs: the whole search rests on these bounds
    (the MILP's big-M constants), so every intermediate neuron's bound is optimised; input split
    recomputes bounds per box instead. ``lemmas``: gets what a certificate needs of the bounds
    beyond CROWN's."""
    lower, upper = box_tensors(region.box, rows.A.device)
    graph = engine.graph
    with torch.no_grad():
        layers = engine.layer_bounds(lower, upper, "crown")
    clause_bounds = _clause_bounds(engine, rows, lower, upper, layers, settings)
    neurons = sum(pre[0].shape[-1] for pre in layers.pre_activation)
    if _open(clause_bounds, settings) and many_inputs and settings.intermediate_alpha_steps > 0 \
            and neurons <= settings.intermediate_alpha_max_neurons:
        with torch.no_grad():
            layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=settings.intermediate_alpha_steps,
                                         prior=layers, kept_slopes=None if lemmas is None else lemmas.kept)
        clause_bounds = [max(old, new) for old, new in
                         zip(clause_bounds, _clause_bounds(engine, rows, lower, upper, layers, settings))]
    refinable = (many_inputs and graph.is_relu_network and graph.activations <= settings.milp_max_activations
                 and len(layers.pre_activation) > 1 and settings.milp_refine_layers > 0)
    if not (refinable and min(clause_bounds) < -settings.milp_refine_gap):
        return RootBounds(layers, clause_bounds, False)
    refining = Deadline(settings.milp_refine_share * deadline.remaining())
    layers = milp_refined_layers(engine, region.box, layers, settings, refining,
                                 None if lemmas is None else lemmas.solved, None if lemmas is None else lemmas.kept)
    refined_bounds = [max(old, new) for old, new in
                      zip(clause_bounds, _clause_bounds(engine, rows, lower, upper, layers, settings))]
    notes.append(f"MILP-refined bounds: weakest clause {min(clause_bounds):.3g} -> {min(refined_bounds):.3g} "
                 f"in {refining.elapsed():.1f} s")
    return RootBounds(layers, refined_bounds, True)


def _certified_split(search: ClauseSearch, method: str, engine: BoundEngine, region: Region, rows: RegionRows,
                     settings: VerifySettings, deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None],
                     notes: list[str], proof: RegionCertificate, roots: list[RootBounds] | None = None,
                     ) -> tuple[SearchOutcome, str]:
    """Many-input dense networks with a certificate: ``search`` (ReLU or activation split) on each
    single-row clause, each within its share of the time (``relu_split_share``, as without a
    certificate, or ``certificate_activation_split_share``); on
    piecewise-linear networks the exact MILP decides the clauses left, which the certificate lists
    as decided by its solver. ``proof.relu_clauses`` gets one entry per clause.

    Both start from the root bounds of the uncertified search (`_root_bounds`: α-CROWN's,
    MILP-refined on ReLU networks; on others re-optimised by `_escalated_bounds`, and those
    appended to ``roots`` for what follows when a clause is left open), recorded in
    ``proof.lemmas`` (`lemmas.RootLemmas`)."""
    assert proof.relu_clauses is not None
    roots = [] if roots is None else roots
    lower, upper = box_tensors(region.box, rows.A.device)
    share_of_time = settings.relu_split_share if method == "relu-split" else settings.certificate_activation_split_share
    lemmas = RootLemmas(engine.graph)
    root = _root_bounds(engine, region, rows, settings, deadline, notes, True, lemmas)
    layers, clause_bounds, refined = root.layers, root.clause_bounds, root.refined
    if method == "activation-split":
        layers, clause_bounds = _escalated_bounds(engine, rows, lower, upper, layers, clause_bounds, settings, deadline,
                                                  notes, lemmas.kept)
        roots.append(RootBounds(layers, clause_bounds, False))
    proof.lemmas = lemmas.to_json(layers)
    # clauses the root bounds refute: their trees close at once, so they go first
    refuted = set(range(rows.n_clauses)) - set(_open(clause_bounds, settings))
    pre_bounds = [(l[0], u[0]) for l, u in layers.pre_activation]
    order = sorted(range(rows.n_clauses), key=lambda clause: clause not in refuted)
    left: list[int] = []
    for index, position in enumerate(order):
        members = (rows.owner == position).nonzero().flatten()
        if members.numel() != 1 or deadline.expired():
            left.append(position)
            continue
        row = int(members[0])
        waiting = len(order) - index if position in refuted else sum(c not in refuted for c in order[index:])
        share = Deadline(share_of_time * deadline.remaining() / waiting)
        leaves: list[ReluLeafRecord] = []
        outcome = search(engine, rows.A[row], -float(rows.b[row]), lower, upper, pre_bounds, settings,
                         share, rows.margin, confirm, leaves)
        if outcome.status == "sat":
            return outcome, method
        if outcome.status == "proven":
            proof.relu_clauses.append(ReluClauseProof(position, row, leaves))
        else:
            left.append(position)
    if not left:
        return SearchOutcome("proven", None, 1, solver_decided=refined), method
    if not (engine.graph.is_piecewise_linear and engine.graph.activations <= settings.milp_max_activations):
        return SearchOutcome("timeout" if deadline.expired() else "unknown", None, 1), "none"
    deciders: dict[int, str] = {}
    outcome = milp_search(engine, region, left, layers, settings, deadline, confirm, notes, deciders)
    proof.relu_clauses.extend(ReluClauseProof(clause, solver=deciders[clause]) for clause in left if clause in deciders)
    return outcome, "relu-split+milp"


def _escalated_bounds(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor,
                      layers: LayerBounds, clause_bounds: list[float], settings: VerifySettings, deadline: Deadline,
                      notes: list[str], kept_slopes: dict[int, list[IntermediateSlopes]] | None = None,
                      ) -> tuple[LayerBounds, list[float]]:
    """While a clause is open, re-optimise the intermediate bounds with the longer α-CROWN runs of
    ``settings.sshaped_alpha_escalation``, each intersected with the bounds before it (so never
    looser); every clause keeps the better of its old and new bound, both sound. ``kept_slopes``:
    filled as `BoundEngine.layer_bounds`'s."""
    for steps in settings.sshaped_alpha_escalation:
        weakest = min(clause_bounds)
        if not _open(clause_bounds, settings) or deadline.expired():
            break
        with torch.no_grad():
            layers = engine.layer_bounds(lower, upper, "alpha-crown", alpha_steps=steps, prior=layers,
                                         kept_slopes=kept_slopes)
        clause_bounds = [max(old, new) for old, new in
                         zip(clause_bounds, _clause_bounds(engine, rows, lower, upper, layers, settings))]
        notes.append(f"{steps}-step α-CROWN on the intermediate bounds: weakest clause {weakest:.3g} -> "
                     f"{min(clause_bounds):.3g}")
    return layers, clause_bounds


def _clause_bounds(engine: BoundEngine, rows: RegionRows, lower: torch.Tensor, upper: torch.Tensor,
                   layers: LayerBounds, settings: VerifySettings) -> list[float]:
    """α-CROWN's lower bound of each clause's violation margin on the whole box (> 0: refuted)."""
    if rows.A.shape[0] == 0:
        return [-float("inf")] * rows.n_clauses
    result = engine.output_bounds(lower, upper, rows.A, -rows.b, method="alpha-crown", alpha_steps=settings.alpha_steps,
                                  layers=layers)
    assert result.coefficients is not None and result.constant is not None
    bounds = clause_lower_bounds(rows, result.lower, result.coefficients, result.constant, lower, upper)[0][0]
    return [float(bounds[k]) for k in range(rows.n_clauses)]


def _open(clause_bounds: list[float], settings: VerifySettings) -> list[int]:
    """Clauses whose bound does not refute them."""
    return still_open(torch.tensor(clause_bounds, dtype=torch.float64), settings.decision_margin).nonzero().flatten().tolist()
