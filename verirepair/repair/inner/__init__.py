"""INNER (Chen et al., "Interpretability Based Neural Network Repair", ISSTA 2024) as a
verirepair strategy.

Linear probes on every hidden layer's features rank the layers by how differently failing and
clean inputs look to them; on the top layer, per-input soft masks over its incoming weights find
the weights that carry the failing decisions (neuron routing); only those weights are then
trained, towards the protected label on failing inputs while distilling the original network's
behaviour on clean inputs. The architecture is unchanged (`TrainableNetwork`), and the loop
verifies every exported candidate.
"""

from .settings import InnerSettings
from .strategy import InnerStrategy, inner_strategy

__all__ = ["InnerSettings", "InnerStrategy", "inner_strategy"]
