"""Reader for the text ``.nnet`` format (Kyle Julian, Stanford 2016) and conversion to ONNX.

Layout of a ``.nnet`` file: comment lines starting with ``//``; then ``layers, inputs, outputs,
max layer size``; the sizes of every layer (input first); a legacy "symmetric" flag; the input
minimums, maximums; the means and ranges (inputs first, then one shared entry for the outputs);
then, layer by layer, the weight rows (one line per neuron) followed by the biases (one per line).
Hidden layers use ReLU, the last layer is linear.

The format's own semantics (used by the ACAS Xu / HCAS tools) is::

    x_n = (clip(x, min, max) - mean_in) / range_in      # per input
    y   = net(x_n) * range_out + mean_out               # every output shares one mean/range

`nnet_to_onnx` offers two choices of input, chosen explicitly by the caller:

* ``"raw"``: the ONNX model takes raw inputs (e.g. ft and rad for HCAS) and contains the input
  normalisation ``(x - mean) / range`` (as ``Sub``/``Div``) and the output de-normalisation.
  The clipping to ``[min, max]`` is **not** included (it is not affine, and inside the
  ``min``/``max`` box it is the identity): the ONNX model equals the ``.nnet`` semantics on that box.
* ``"normalized"``: the ONNX model takes already normalised inputs and returns the raw network
  scores (weights and biases only). This is what REASSURE's HCAS loader builds; its experiments
  then feed it raw-scale points, so reproducing those experiments needs this mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InputError

NORMALIZATIONS = ("raw", "normalized")


@dataclass(frozen=True)
class NNet:
    weights: tuple[np.ndarray, ...]  # [out, in] per layer, float64
    biases: tuple[np.ndarray, ...]
    input_min: np.ndarray
    input_max: np.ndarray
    input_mean: np.ndarray
    input_range: np.ndarray
    output_mean: float
    output_range: float

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.weights[-1].shape[0])

    def forward_normalized(self, x: np.ndarray) -> np.ndarray:
        """Network scores for normalised inputs ``x`` [B, n] (no de-normalisation), float64."""
        return relu_mlp_forward(self.weights, self.biases, x)

    def forward_raw(self, x: np.ndarray) -> np.ndarray:
        """The full ``.nnet`` semantics (clip, normalise, run, de-normalise) for raw inputs."""
        x = np.clip(np.atleast_2d(np.asarray(x, dtype=np.float64)), self.input_min, self.input_max)
        y = self.forward_normalized((x - self.input_mean) / self.input_range)
        return y * self.output_range + self.output_mean


def _numbers(line: str) -> list[float]:
    return [float(v) for v in line.replace(",", " ").split()]


def read_nnet(path: str | Path) -> NNet:
    """Parse a ``.nnet`` file; a malformed file gives an `InputError` naming the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise InputError(path, None, f"cannot read: {error.strerror}") from None
    body = [(n + 1, line) for n, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("//")]
    cursor = 0

    def take(count: int | None, what: str) -> list[float]:
        nonlocal cursor
        if cursor >= len(body):
            raise InputError(path, "end of file", f"expected {what}")
        number, line = body[cursor]
        cursor += 1
        try:
            values = _numbers(line)
        except ValueError:
            raise InputError(path, f"line {number}", f"expected numbers for {what}") from None
        if count is not None and len(values) < count:
            raise InputError(path, f"line {number}", f"expected {count} numbers for {what}, got {len(values)}")
        return values[:count] if count is not None else values

    n_layers, n_in, n_out, _ = (int(v) for v in take(4, "layer count, inputs, outputs, max size"))
    sizes = [int(v) for v in take(n_layers + 1, "layer sizes")]
    if sizes[0] != n_in or sizes[-1] != n_out or min(sizes) < 1:
        raise InputError(path, "layer sizes", f"sizes {sizes} disagree with {n_in} inputs and {n_out} outputs")
    take(None, "symmetric flag")
    input_min = np.array(take(n_in, "input minimums"))
    input_max = np.array(take(n_in, "input maximums"))
    means = np.array(take(n_in + 1, "means"))
    ranges = np.array(take(n_in + 1, "ranges"))
    if np.any(ranges == 0):
        raise InputError(path, "ranges", "a normalisation range is zero")
    weights, biases = [], []
    for layer in range(n_layers):
        rows = [take(sizes[layer], f"weights of layer {layer + 1}") for _ in range(sizes[layer + 1])]
        bias = [take(1, f"biases of layer {layer + 1}")[0] for _ in range(sizes[layer + 1])]
        weights.append(np.array(rows, dtype=np.float64))
        biases.append(np.array(bias, dtype=np.float64))
    return NNet(tuple(weights), tuple(biases), input_min, input_max, means[:n_in], ranges[:n_in],
                float(means[n_in]), float(ranges[n_in]))


def nnet_to_onnx(nnet: NNet, normalize: str) -> onnx.ModelProto:
    """An ONNX model (float32, opset 13, input ``input`` [1, n], output ``output`` [1, m])."""
    if normalize not in NORMALIZATIONS:
        raise InputError(None, "--normalize", f"expected one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    nodes, inits = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    current = "input"
    if normalize == "raw":
        nodes.append(helper.make_node("Sub", [current, const("input_mean", nnet.input_mean[None, :])], ["centred"]))
        nodes.append(helper.make_node("Div", ["centred", const("input_range", nnet.input_range[None, :])], ["normalised"]))
        current = "normalised"
    for i, (w, b) in enumerate(zip(nnet.weights, nnet.biases)):
        last = i == len(nnet.weights) - 1
        out = "scores" if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [current, const(f"W{i}", w), const(f"B{i}", b)], [out], transB=1))
        current = out
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            current = f"h{i}"
    if normalize == "raw":
        nodes.append(helper.make_node("Mul", [current, const("output_range", np.array([nnet.output_range]))], ["scaled"]))
        nodes.append(helper.make_node("Add", ["scaled", const("output_mean", np.array([nnet.output_mean]))], ["output"]))
    else:
        nodes.append(helper.make_node("Identity", [current], ["output"]))
    graph = helper.make_graph(
        nodes, "nnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, nnet.n_inputs])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, nnet.n_outputs])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="verirepair-convert")
    model.ir_version = 8
    model.doc_string = f"converted from .nnet, inputs: {normalize}"
    onnx.checker.check_model(model, full_check=True)
    return model


def relu_mlp_forward(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Dense layers (``weights[i]`` is [out, in]) with ReLU between them, in float64, on rows of ``x``."""
    h = np.atleast_2d(np.asarray(x, dtype=np.float64))
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h
