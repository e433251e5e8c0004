"""Repair strategies behind one interface, and the check-and-fix loop."""

from .loop import (
    RepairSettings,
    check_and_fix,
    check_and_fix_network,
    check_and_fix_suite,
    check_and_fix_suite_network,
    repair_network,
    repair_suite,
)
from .pointwise import label_spec, repair_points
from .registry import available, strategy_named
from .report import RepairReport
from .strategy import RepairCandidate, RepairProblem, RepairStrategy

__all__ = ["RepairCandidate", "RepairProblem", "RepairReport", "RepairSettings", "RepairStrategy", "available",
           "check_and_fix", "check_and_fix_network", "check_and_fix_suite", "check_and_fix_suite_network", "label_spec",
           "repair_network", "repair_suite", "repair_points", "strategy_named"]
