"""Network front end: load ONNX, convert to torch operations, run the onnxruntime reference."""

from .model import Network, Node
from .onnx_import import load_network, read_onnx_model
from .operators import CONVERTERS
from .reference import check_import_agrees, run_onnxruntime

__all__ = ["CONVERTERS", "Network", "Node", "check_import_agrees", "load_network", "read_onnx_model",
           "run_onnxruntime"]
