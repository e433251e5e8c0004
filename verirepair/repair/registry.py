"""Strategy names for `--strategy`, mapped to factories (imported lazily: strategies are heavy)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .strategy import RepairStrategy

# name → ("module", "factory attribute"); the factory takes no arguments. One line per strategy.
STRATEGIES: dict[str, tuple[str, str]] = {
    "auto": ("verirepair.repair.auto", "auto_strategy"),
    "reassure": ("verirepair.repair.reassure", "reassure_strategy"),
    "reassure-boxes": ("verirepair.repair.reassure.boxes", "box_patch_strategy"),
    "birdnn-retrain": ("verirepair.repair.birdnn", "retrain_strategy"),
    "birdnn-finetune": ("verirepair.repair.birdnn", "finetune_strategy"),
    "birdnn": ("verirepair.repair.sequence", "birdnn_sequence"),
    "inner": ("verirepair.repair.inner", "inner_strategy"),
    "archrepair": ("verirepair.repair.archrepair", "archrepair_strategy"),
}
# The strategies that choose differently for a suite of properties, with the factory of that choice.
SUITE_STRATEGIES: dict[str, tuple[str, str]] = {
    "auto": ("verirepair.repair.auto", "auto_suite_strategy"),
}


def strategy_named(name: str, suite: bool = False) -> RepairStrategy:
    """The strategy called ``name``, for a suite of properties when ``suite``; the caller reports
    unknown names (see `available`)."""
    module, attribute = SUITE_STRATEGIES[name] if suite and name in SUITE_STRATEGIES else STRATEGIES[name]
    factory: Callable[[], RepairStrategy] = getattr(importlib.import_module(module), attribute)
    return factory()


def available() -> list[str]:
    return sorted(STRATEGIES)
