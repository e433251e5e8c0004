"""verirepair: verify and repair neural networks (ONNX + VNN-LIB)."""

__version__ = "0.1.0"
