"""The clause objective: margins and the convex-combination clause bound, against brute force."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verirepair.spec import Box, Clause, Region
from verirepair.verify.objective import RegionRows, clause_lower_bounds


def _rows(n_rows: int, n_out: int = 3) -> RegionRows:
    box = Box(np.zeros(2), np.ones(2))
    clause = Clause(np.eye(n_out)[:n_rows], np.zeros(n_rows))
    return RegionRows.of(Region(box, (clause,)), n_out, torch.device("cpu"))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), n_rows=st.integers(1, 3), n_in=st.integers(1, 4))
def test_clause_bound_never_exceeds_the_true_minimum_of_the_rows_max(seed: int, n_rows: int, n_in: int) -> None:
    """Soundness: the bound is <= min over the box of max_i (a_i·x + c_i), checked on a dense sample."""
    rng = np.random.default_rng(seed)
    a = torch.tensor(rng.normal(size=(1, n_rows, n_in)))
    c = torch.tensor(rng.normal(size=(1, n_rows)))
    lower = torch.tensor(rng.uniform(-1, 0, size=(1, n_in)))
    upper = lower + torch.tensor(rng.uniform(0.01, 2, size=(1, n_in)))
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    row_bounds = c + (a * center.unsqueeze(1)).sum(-1) - (a.abs() * radius.unsqueeze(1)).sum(-1)
    bounds, weights = clause_lower_bounds(_rows(n_rows), row_bounds, a, c, lower, upper)
    bound = bounds[0, 0].item()
    grid = lower + torch.rand(20_000, n_in, dtype=torch.float64) * (upper - lower)
    corners = torch.tensor(np.array(np.meshgrid(*[[0, 1]] * n_in)).reshape(n_in, -1).T, dtype=torch.float64)
    points = torch.cat([grid, lower + corners * (upper - lower)])
    true_minimum = (points @ a[0].T + c[0]).max(dim=1).values.min().item()
    assert bound <= true_minimum + 1e-12
    assert bound >= row_bounds.max().item() - 1e-12  # never worse than the best single row
    # the returned weights reproduce the bound (or a single row's, which is at least as good)
    lam = weights[0, 0]
    assert abs(lam.sum().item() - 1.0) < 1e-9 and (lam >= 0).all()
    mixed = (lam.unsqueeze(-1) * a[0]).sum(0)
    value = (lam * c[0]).sum() + (mixed * center[0]).sum() - (mixed.abs() * radius[0]).sum()
    assert value.item() <= bound + 1e-12
    if (lam == 1).sum() != 1:
        assert abs(value.item() - bound) < 1e-9


def test_combination_proves_a_tie_that_no_single_row_proves() -> None:
    """Rows x and 1 - x on [0, 1]: neither is positive everywhere, their average (1/2) is."""
    a = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    c = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    lower, upper = torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    row_bounds = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    bound = clause_lower_bounds(_rows(2), row_bounds, a, c, lower, upper)[0][0, 0].item()
    assert 0.4 < bound <= 0.5 + 1e-12


def test_still_open_refuses_nan_and_keeps_infinite_lower_bounds_open() -> None:
    """NaN compares false with everything: a test ``bound <= margin`` for "open" would have closed
    the branch. `still_open` raises instead; -inf (no bound) stays open, +inf closes."""
    import pytest
    import torch

    from verirepair.verify.objective import NaNBound, still_open

    bounds = torch.tensor([-float("inf"), -1.0, 0.0, 1e-9, 2e-9, float("inf")], dtype=torch.float64)
    assert still_open(bounds, 1e-9).tolist() == [True, True, True, True, False, False]
    with pytest.raises(NaNBound):
        still_open(torch.tensor([1.0, float("nan")]), 1e-9)
