"""ArchRepair: block-level architecture-and-weight repair (Qi et al., ACM TOSEM 2023).

The most vulnerable block of the graph (`localise`) is relaxed into a small DARTS-style cell of
operations the bound graph supports (`search`), the strongest operation per edge is kept and
spliced into the original ONNX model (`export`), and its weights are fine-tuned there with an
optional verifiability term (`finetune`). The loop verifies the exported file.
"""

from .settings import ArchRepairSettings
from .strategy import ArchRepair, archrepair_strategy

__all__ = ["ArchRepair", "ArchRepairSettings", "archrepair_strategy"]
