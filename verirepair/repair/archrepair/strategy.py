"""`--strategy archrepair`: localise the most vulnerable block, search a cell for it, splice it in.

The first call per problem gathers failing inputs (the verifier's counterexamples and PGD points
of the violated boxes) and passing ones (keep inputs and box samples where the property holds),
scores every block (`localise`), relaxes the highest into a `search.Cell`, searches, keeps the
strongest operation per edge, splices the cell into the original ONNX model (`export`) and
fine-tunes the cell's weights there (`finetune`). Later calls add the new counterexamples and
fine-tune the same cell further. The loop verifies every exported file.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from ...errors import SettingsError, UnsupportedError
from ...network import Network, load_network
from ...verify import Deadline
from ..birdnn.attack import low_margin_points
from ..birdnn.common import Phases, counterexample_array, problem_key, torch_threads
from ..parameters import TrainableNetwork, exported_model, original_model
from ..strategy import ACCURACY_POLISH, RepairCandidate, RepairProblem, call_budget
from .blocks import Block, blocks_of
from .export import spliced_model
from .finetune import accuracy_rounds, cell_module, finetune
from .localise import BlockScore, block_scores, ranked
from .objective import RepairSamples
from .operations import ConvRelu, DenseRelu, Operation, widened
from .search import Cell, SearchedNetwork, original_operation, search
from .settings import ArchRepairSettings

Tensor = torch.Tensor


@dataclass
class Session:
    key: tuple[object, ...]
    samples: RepairSamples
    block: Block
    scores: list[BlockScore]
    choice: dict[str, str]
    mixture: dict[str, dict[str, float]]
    module: TrainableNetwork  # the spliced model's graph, the cell's weights trainable
    parameters: int  # of the kept cell
    rounds: int = 0
    proven_state: list[Tensor] | None = None  # the proven candidate's cell weights, once polishing starts


def failing_inputs(original: TrainableNetwork, samples: RepairSamples, counterexamples: np.ndarray,
                   settings: ArchRepairSettings, rng: np.random.Generator) -> np.ndarray:
    """The counterexamples and PGD points of the boxes where the original violates."""
    seeds = samples.box_x[torch.argsort(samples.margins(original))[:settings.attack_starts]]
    found = low_margin_points(original, samples.property, seeds, settings.attack_starts, settings.attack_steps, 0.0, rng)
    return np.vstack([counterexamples.reshape(-1, samples.spec.n_inputs), found])


def localised(original: TrainableNetwork, samples: RepairSamples, failing: np.ndarray, blocks: list[Block],
              count: int, rng: np.random.Generator) -> list[BlockScore]:
    """`block_scores` with the strategy's losses: minus the property margin on failing inputs,
    minus the original decision's lead over the runner-up on passing ones (keep inputs and the
    box samples where the property holds, half each); up to ``count`` inputs of each."""
    failing = failing[np.sort(rng.permutation(len(failing))[:count])]
    fail_x = torch.tensor(failing, dtype=torch.float32)
    fail_member = samples.property.membership(failing)
    holds = samples.box_x[~samples.failing]
    pass_x = torch.cat([samples.keep_x[torch.from_numpy(rng.permutation(len(samples.keep_x))[:count - count // 2])],
                        holds[torch.from_numpy(rng.permutation(len(holds))[:count // 2])]])
    label = (samples.sign * original(pass_x)).argmax(dim=1)

    def failing_loss(y: Tensor, rows: Tensor) -> Tensor:
        return -samples.property.margin(y, fail_member[rows])

    def passing_loss(y: Tensor, rows: Tensor) -> Tensor:
        scores = samples.sign * y
        chosen = scores.gather(1, label[rows].unsqueeze(1)).squeeze(1)
        others = scores.scatter(1, label[rows].unsqueeze(1), -torch.inf).amax(dim=1)
        return others - chosen

    return block_scores(original, blocks, fail_x, pass_x, failing_loss, passing_loss)


def searchable(network: Network, scores: list[BlockScore], named: str = "") -> tuple[Block, Operation]:
    """The highest-scoring block the cell can replace (with ``named``: the block whose output
    value that is), with its warm-started operation; when none can, the error about the
    highest-scoring one."""
    chosen = [s for s in ranked(scores) if not named or s.block.target == named]
    if not chosen:
        raise SettingsError(f"block {named!r} is not one of the network's blocks (their output values: "
                            f"{', '.join(s.block.target for s in scores)})")
    first: UnsupportedError | None = None
    for score in chosen:
        try:
            return score.block, original_operation(network, score.block)
        except UnsupportedError as error:
            first = first or error
    assert first is not None, "a network with blocks has a highest-scoring one"
    raise first


class ArchRepair:
    name = "archrepair"

    def __init__(self, settings: ArchRepairSettings | None = None) -> None:
        self.settings = settings or ArchRepairSettings()
        self.session: Session | None = None

    def repair(self, problem: RepairProblem, previous: RepairCandidate | None, deadline: Deadline) -> RepairCandidate:
        settings = self.settings
        phases = Phases()
        budget = call_budget(settings.max_seconds, settings.deadline_share, deadline)
        rng = np.random.default_rng(settings.seed + problem.seed + (self.session.rounds if self.session else 0))
        with torch_threads(settings.threads):
            key = problem_key(problem)
            label_steps = 0
            if self.session is None or self.session.key != key or previous is None:
                torch.manual_seed(settings.seed + problem.seed)
                self.session = self._searched(problem, key, budget, phases, rng)
                label_steps = settings.label_steps if problem.keep_labels is not None else 0
            else:
                with phases("characterise"):
                    self.session.samples.add(counterexample_array(problem))
            session = self.session
            session.rounds += 1
            session.proven_state = None
            with phases("finetune"):
                details = finetune(session.module, session.samples, settings, budget, rng, label_steps)
            return self._candidate(problem, session, details, phases)

    def polish(self, problem: RepairProblem, proven: RepairCandidate, deadline: Deadline) -> RepairCandidate | None:
        """The accuracy phase (`finetune.accuracy_rounds`) from the proven cell weights, with the
        counterexamples of earlier polished candidates among the failing inputs: a candidate
        (`ACCURACY_POLISH`) when its validation accuracy is higher than the proven weights', else
        None. Without labelled keep inputs (no validation split) there is nothing to judge by."""
        settings, session = self.settings, self.session
        if session is None or settings.accuracy_rounds == 0 or session.samples.validation_x is None:
            return None
        phases = Phases()
        budget = call_budget(settings.accuracy_seconds, settings.deadline_share, deadline)
        rng = np.random.default_rng(settings.seed + problem.seed + session.rounds)
        with torch_threads(settings.threads):
            trainable = [p for p in session.module.parameters() if p.requires_grad]
            if session.proven_state is None:
                session.proven_state = [p.detach().clone() for p in trainable]
            with torch.no_grad():  # every attempt starts from the proof
                for parameter, value in zip(trainable, session.proven_state):
                    parameter.copy_(value)
            with phases("characterise"):
                session.samples.add(counterexample_array(problem))
            with phases("polish"):
                details = accuracy_rounds(session.module, session.samples, settings, budget, rng)
            if not details["validation_accuracy"] > details["validation_accuracy_proven"]:  # type: ignore[operator]
                return None
            return self._candidate(problem, session, details | {"polish_goal": ACCURACY_POLISH}, phases)

    def _candidate(self, problem: RepairProblem, session: Session, details: dict[str, object], phases: Phases) -> RepairCandidate:
        """The session's spliced model with the cell's current weights, and the report's details."""
        start = time.monotonic()
        model = exported_model(session.module, {"strategy": self.name, "block": session.block.target,
                                                "cell": session.choice})
        phases.seconds["export"] = time.monotonic() - start
        scores = {s.block.target: {"forward": round(s.forward, 4), "backward": round(s.backward, 4)} for s in session.scores}
        original_validation = session.samples.validation_accuracy(session.samples.original)
        if original_validation is not None:
            details["original_validation_accuracy"] = original_validation
        details.update({"strategy": self.name, "round": session.rounds, "block": session.block.describe(problem.original),
                        "block_scores": scores, "cell": session.choice, "mixture": session.mixture,
                        "parameters_added": session.parameters - session.block.parameters,
                        "failing_samples": int(session.samples.failing.sum())})
        return RepairCandidate(model, details, phases.seconds)

    def _searched(self, problem: RepairProblem, key: tuple[object, ...], budget: Deadline, phases: Phases,
                  rng: np.random.Generator) -> Session:
        settings, network = self.settings, problem.original
        original = TrainableNetwork(network)
        original.requires_grad_(False)
        with phases("characterise"):
            shape = tuple(network.input_shape[1:])
            samples = RepairSamples(problem.spec, original, problem.keep_inputs, problem.decision, settings,
                                    problem.suite, problem.keep_labels, shape if len(shape) == 3 else None)  # type: ignore[arg-type]
            failing = failing_inputs(original, samples, counterexample_array(problem), settings, rng)
            samples.add(failing)
        with phases("localise"):
            blocks = blocks_of(network)
            if not blocks:
                raise UnsupportedError(network.path, "network", "ArchRepair found no block (a weighted run ending in a Relu "
                                       "between two single-value cuts of the graph)")
            original.requires_grad_(True)
            scores = localised(original, samples, failing, blocks, settings.localise_samples, rng)
            original.requires_grad_(False)
            block, warm = searchable(network, scores, settings.block)
            if problem.keep_labels is not None and settings.widen > 1:
                assert isinstance(warm, DenseRelu | ConvRelu), "a block's warm start is one layer"
                warm = widened(warm, settings.widen, torch.Generator().manual_seed(settings.seed + problem.seed))
        with phases("search"):
            cell = Cell(warm, block, settings)
            searched = SearchedNetwork(network, block, cell)
            mixture = search(searched, samples.loss, settings, budget)
            discrete = cell.discrete()
            model = spliced_model(original_model(network), network, block, discrete)
            with tempfile.TemporaryDirectory(prefix="verirepair-archrepair-") as folder:
                path = Path(folder) / "cell.onnx"
                onnx.save(model, str(path))
                module = cell_module(load_network(path), model)
        return Session(key, samples, block, scores, discrete.choice, mixture, module, discrete.parameter_count())


def archrepair_strategy() -> ArchRepair:
    return ArchRepair()
