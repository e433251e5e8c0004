"""Complete search for piecewise-linear networks with many inputs: one MILP per open clause."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..bounds import BoundEngine
from ..milp import encode_chain, solve_with_fallback
from ..spec import Region
from .deadline import Deadline
from .input_split import SearchOutcome
from .objective import box_tensors
from .result import Counterexample
from .settings import VerifySettings


def milp_search(engine: BoundEngine, region: Region, open_clauses: list[int], settings: VerifySettings,
                deadline: Deadline, confirm: Callable[[np.ndarray], Counterexample | None],
                notes: list[str]) -> SearchOutcome:
    """Decide each open clause of ``region`` exactly; ``notes`` collects solver remarks."""
    lower, upper = box_tensors(region.box, torch.device(settings.device))
    with torch.no_grad():
        layers = engine.layer_bounds(lower, upper, "crown")
    pre_bounds = [(l[0].cpu().numpy(), u[0].cpu().numpy()) for l, u in layers.pre_activation]
    for index in open_clauses:
        if deadline.expired():
            return SearchOutcome("timeout", None, 0)
        model, inputs, _ = encode_chain(engine.chain, region.box, pre_bounds, region.clauses[index],
                                        margin=settings.milp_margin)
        result = solve_with_fallback(model, deadline.remaining(), settings.milp_solver)
        if result.note and result.note not in notes:
            notes.append(result.note)
        if result.status == "infeasible":
            continue
        if result.status in ("feasible", "optimal") and result.x is not None:
            found = confirm(result.x[inputs])
            if found is not None:
                return SearchOutcome("sat", found, 0)
            notes.append("MILP point not confirmed by onnxruntime")
            return SearchOutcome("unknown", None, 0)
        return SearchOutcome("timeout" if result.status == "timeout" or deadline.expired() else "unknown", None, 0)
    return SearchOutcome("proven", None, 0)
