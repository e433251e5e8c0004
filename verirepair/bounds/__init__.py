"""Sound output bounds over input boxes: IBP, CROWN, α-CROWN (float64, batched, any device)."""

from .engine import BoundEngine, LayerBounds, Method, OutputBound, concretize
from .layers import ActivationLayer, AffineLayer, Chain, Layer, MaxPoolLayer
from .lowering import lower_network

__all__ = ["ActivationLayer", "AffineLayer", "BoundEngine", "Chain", "Layer", "LayerBounds",
           "MaxPoolLayer", "Method", "OutputBound", "concretize", "lower_network"]
