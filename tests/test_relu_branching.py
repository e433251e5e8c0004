"""Filtered smart branching (`ReluSplitter.filtered_branching`) on small ReLU networks whose every
split can be enumerated: the exact minimum of each child comes from enumerating the activation
patterns (one LP per pattern), and each candidate's children are bounded one at a time, apart
from the batched pass the branching uses."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from dense_chain import Chain
from random_nets import random_mlp
from scipy.optimize import linprog

from verirepair.bounds import BoundEngine
from verirepair.bounds.engine import LayerBounds, Relaxation
from verirepair.errors import SettingsError
from verirepair.verify import VerifySettings
from verirepair.verify.relu_split import Domains, ReluSplitter, _children

F64 = torch.float64
HIDDEN = (4, 4)


def _exact_child_minima(chain: Chain, c: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """[N, 2]: per flat hidden neuron, the exact minimum of ``c·f(x)`` over the box points where its
    input is <= 0 (column 0) and >= 0 (column 1), by an LP per activation pattern."""
    (w0, b0), (w1, b1), (w2, b2) = [(layer.weight.numpy(), layer.bias.numpy()) for layer in chain.layers[::2]]
    minima = np.full((sum(HIDDEN), 2), np.inf)
    box = list(zip(lower, upper))
    for first in itertools.product([0.0, 1.0], repeat=HIDDEN[0]):
        p1 = np.array(first)
        sign1 = 1 - 2 * p1  # s·z <= 0 keeps each neuron on its pattern's side
        if linprog(np.zeros(len(box)), A_ub=sign1[:, None] * w0, b_ub=-sign1 * b0, bounds=box, method="highs").status:
            continue  # no point of the box has this first-layer pattern
        w_mid, b_mid = w1 @ (p1[:, None] * w0), w1 @ (p1 * b0) + b1
        for second in itertools.product([0.0, 1.0], repeat=HIDDEN[1]):
            p2 = np.array(second)
            sign2 = 1 - 2 * p2
            rows = np.vstack([sign1[:, None] * w0, sign2[:, None] * w_mid])
            rhs = np.concatenate([-sign1 * b0, -sign2 * b_mid])
            objective = c @ w2 @ (p2[:, None] * w_mid)
            solved = linprog(objective, A_ub=rows, b_ub=rhs, bounds=box, method="highs")
            if solved.status != 0:
                continue
            value = solved.fun + c @ (w2 @ (p2 * b_mid) + b2)
            pattern = np.concatenate([p1, p2]).astype(int)
            index = np.arange(pattern.size)
            minima[index, pattern] = np.minimum(minima[index, pattern], value)
    return minima


def _alone(splitter: ReluSplitter, parent: Domains, flat: int, active: bool) -> float:
    """One CROWN pass's bound of one child of ``parent``, built by hand, with the parent's slopes and
    multipliers (the split neuron's multipliers zero)."""
    layer, neuron = divmod(flat, HIDDEN[0])
    pre_lower = [t.clone() for t in parent.pre_lower]
    pre_upper = [t.clone() for t in parent.pre_upper]
    multipliers = [t.clone() for t in parent.multipliers]
    (pre_lower if active else pre_upper)[layer][0, neuron] = 0.0
    multipliers[layer][0, neuron] = 0.0
    nodes = splitter.engine.graph.nonlinear
    fixed = Relaxation({i: s.unsqueeze(1) for i, s in zip(nodes, parent.slopes)},
                       {i: m.unsqueeze(1) for i, m in zip(nodes, multipliers)})
    result = splitter.engine.output_bounds(splitter.box_lower, splitter.box_upper, splitter.C, splitter.d,
                                           method="crown", layers=LayerBounds(tuple(zip(pre_lower, pre_upper))),
                                           start=fixed)
    return float(result.lower[0, 0])


def test_filtered_branching_picks_the_candidate_whose_worse_child_bounds_best() -> None:
    """On each network: every child bound (one-pass and fully optimised) is at most the child's
    exact minimum; FSB's pick has the best worse-child bound among its candidates, so never a
    worse one than the best-scored neuron's (the base rule); on some network it is strictly better."""
    strictly_better = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        chain = random_mlp(seed, 2, HIDDEN, 2)
        engine = BoundEngine(chain.graph)
        center = rng.uniform(-1, 1, 2)
        lower = torch.tensor(center - 1.0, dtype=F64).reshape(1, -1)
        upper = torch.tensor(center + 1.0, dtype=F64).reshape(1, -1)
        c = torch.tensor(rng.normal(size=2), dtype=F64)
        pre = [(l[0], u[0]) for l, u in engine.layer_bounds(lower, upper, "crown").pre_activation]
        exact = _exact_child_minima(chain, c.numpy(), lower[0].numpy(), upper[0].numpy())
        splitter = ReluSplitter(engine, c, 0.0, lower[0], upper[0], pre)
        root = Domains([l.reshape(1, -1) for l, _ in pre], [u.reshape(1, -1) for _, u in pre],
                       [torch.zeros(1, n) for n in HIDDEN], [torch.zeros(1, n, 2) for n in HIDDEN],
                       torch.full((1,), -torch.inf, dtype=F64), torch.zeros(1, dtype=torch.long))
        result = splitter.bound(root, start=False)
        parent, scores = result.domains, result.scores
        unstable = (scores[0] >= 0).nonzero().flatten().tolist()
        if not unstable:
            continue
        worse = {}
        for flat in unstable:
            sides = [_alone(splitter, parent, flat, active) for active in (False, True)]
            assert sides[0] <= exact[flat, 0] + 1e-9 and sides[1] <= exact[flat, 1] + 1e-9
            worse[flat] = min(sides)
        base_choice = int(parent.branch[0])
        assert base_choice == int(scores[0].argmax())
        by_score = sorted(unstable, key=lambda flat: -float(scores[0, flat]))
        for candidates in (2, len(unstable)):
            splitter.candidates = candidates
            choice = int(splitter.filtered_branching(parent, scores).branch[0])
            assert choice in by_score[:candidates]
            assert worse[choice] == pytest.approx(max(worse[f] for f in by_score[:candidates]), abs=1e-9)
            assert worse[choice] >= worse[base_choice] - 1e-9
        strictly_better += worse[choice] > worse[base_choice] + 1e-9
        # the children of the pick, optimised as the search bounds them, stay below their exact minima
        children = splitter.bound(_children(replace(parent, branch=torch.tensor([choice])))).own
        assert float(children[0]) <= exact[choice, 1] + 1e-9 and float(children[1]) <= exact[choice, 0] + 1e-9
    assert strictly_better >= 1



def test_fewer_than_one_candidate_is_refused() -> None:
    with pytest.raises(SettingsError, match="relu_split_candidates"):
        VerifySettings(relu_split_candidates=0)
