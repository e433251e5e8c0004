"""Seeded random networks, boxes and ONNX files shared by the bound and verifier tests.

Every generator takes an ``int`` seed (or a numpy ``Generator``) and is deterministic, so a failing
case is reproduced from the seed alone. Chains are float64 torch; `save_onnx` writes an equivalent
ONNX MLP with *float32* weights, and `float32_rounded` gives the float64 chain that is exactly the
network stored in that file (the one an oracle must reason about).
"""

from __future__ import annotations

import itertools
import tempfile
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import torch
from dense_chain import ActivationLayer, AffineLayer, Chain, MaxPoolLayer
from onnx import TensorProto, helper, numpy_helper

from verirepair.bounds import build_graph
from verirepair.network import load_network
from verirepair.spec import Box, Clause, Region, Spec, write_vnnlib

ONNX_OPSET = 13
RngLike = int | np.random.Generator


def _rng(seed: RngLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _affine(rng: np.random.Generator, n_in: int, n_out: int, scale: float) -> AffineLayer:
    weight = rng.normal(scale=scale / np.sqrt(n_in), size=(n_out, n_in))
    bias = rng.normal(scale=0.5 * scale, size=n_out)
    return AffineLayer(torch.tensor(weight, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64))


def random_mlp(seed: RngLike, n_in: int, hidden: list[int] | tuple[int, ...], n_out: int,
               activation: str = "relu", scale: float = 1.5) -> Chain:
    """``Affine → act → … → act → Affine`` with weights ~ N(0, scale²/fan_in)."""
    rng = _rng(seed)
    sizes = [n_in, *hidden, n_out]
    layers: list = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        if k:
            layers.append(ActivationLayer(activation, a))
        layers.append(_affine(rng, a, b, scale))
    return Chain(tuple(layers))


def random_windows(rng: np.random.Generator, n_in: int, n_windows: int, size: int) -> torch.Tensor:
    """Random max-pool windows ([n_windows, size] indices into ``n_in``), overlapping and, now
    and then, with a repeated index (as padding produces)."""
    windows = np.stack([rng.choice(n_in, size=size, replace=False) for _ in range(n_windows)])
    if size > 1 and rng.random() < 0.3:
        windows[0, -1] = windows[0, 0]
    return torch.tensor(windows, dtype=torch.long)


def random_maxpool_chain(seed: RngLike, n_in: int = 3, n_out: int = 2) -> Chain:
    """A dense layer, then ReLU and MaxPool in one of the orders the lowering produces
    (ReLU→MaxPool, MaxPool→ReLU, MaxPool alone), then a dense output layer."""
    rng = _rng(seed)
    hidden = int(rng.integers(4, 10))
    size = int(rng.integers(2, min(4, hidden) + 1))
    n_windows = int(rng.integers(2, 6))
    pool = MaxPoolLayer(random_windows(rng, hidden, n_windows, size), hidden)
    order = rng.integers(3)
    middle: list = {0: [ActivationLayer("relu", hidden), pool],
                    1: [pool, ActivationLayer("relu", n_windows)],
                    2: [pool]}[int(order)]
    return Chain((_affine(rng, n_in, hidden, 1.5), *middle, _affine(rng, n_windows, n_out, 1.5)))


def random_box(seed: RngLike, n: int, batch: int = 1, width: float = 1.0,
               degenerate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random boxes ([batch, n] float64 lower, upper); with ``degenerate`` some
    dimensions have zero width."""
    rng = _rng(seed)
    center = rng.normal(scale=1.0, size=(batch, n))
    radius = rng.uniform(0.0, width, size=(batch, n)) * rng.uniform(0.05, 1.0, size=(batch, 1))
    if degenerate:
        radius[rng.random((batch, n)) < 0.3] = 0.0
    lower, upper = center - radius, center + radius
    return torch.tensor(lower), torch.tensor(upper)


def sample_box(seed: RngLike, lower: torch.Tensor, upper: torch.Tensor, count: int,
               vertices: bool = True) -> torch.Tensor:
    """[B, P, n] points of each box: uniform samples, points on faces, and (for n <= 8) all
    vertices."""
    rng = _rng(seed)
    batch, n = lower.shape
    u = torch.tensor(rng.random((batch, count, n)), dtype=lower.dtype, device=lower.device)
    # push a third of the samples onto random faces: bounds are tightest (and bugs show) there
    face = torch.tensor(rng.random((batch, count, n)) < 0.3, device=lower.device)
    u = torch.where(face, u.round(), u)
    parts = [u]
    if vertices and n <= 8:
        corners = torch.tensor(np.array(np.meshgrid(*[[0.0, 1.0]] * n, indexing="ij")).reshape(n, -1).T,
                               dtype=lower.dtype, device=lower.device)
        parts.append(corners.unsqueeze(0).expand(batch, -1, -1))
    u = torch.cat(parts, dim=1)
    lower, upper = lower.unsqueeze(1), upper.unsqueeze(1)
    # clamped: l + 1·(u - l) can round one ulp past u
    return torch.minimum(torch.maximum(lower + u * (upper - lower), lower), upper)


def forward_layers(chain: Chain, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output of ``chain`` on ``x`` [N, n_in] and the input of every non-affine layer, computed
    here independently of `Chain.forward`."""
    inputs = []
    for layer in chain.layers:
        if isinstance(layer, AffineLayer):
            x = x @ layer.weight.T + layer.bias
            continue
        inputs.append(x)
        if isinstance(layer, MaxPoolLayer):
            x = torch.stack([x[:, w].max(dim=1).values for w in layer.windows.tolist()], dim=1)
        else:
            x = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[layer.kind](x)
    return x, inputs


# ---- ONNX ---------------------------------------------------------------------------------------
ONNX_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def save_onnx(chain: Chain, path: str | Path) -> Path:
    """Write ``chain`` (affine + element-wise activations only) as an ONNX MLP of Gemm and
    Relu/Sigmoid/Tanh nodes with float32 weights. The batch dimension is symbolic (``N``), so the
    file also runs batches in onnxruntime."""
    path = Path(path)
    nodes, initialisers = [], []
    current = "x"
    for k, layer in enumerate(chain.layers):
        out = "y" if k == len(chain.layers) - 1 else f"h{k}"
        if isinstance(layer, AffineLayer):
            w, b = f"W{k}", f"B{k}"
            initialisers += [numpy_helper.from_array(layer.weight.detach().cpu().numpy().astype(np.float32), w),
                             numpy_helper.from_array(layer.bias.detach().cpu().numpy().astype(np.float32), b)]
            nodes.append(helper.make_node("Gemm", [current, w, b], [out], name=f"gemm{k}", transB=1))
        elif isinstance(layer, ActivationLayer):
            nodes.append(helper.make_node(ONNX_ACTIVATIONS[layer.kind], [current], [out], name=f"act{k}"))
        else:
            raise TypeError("save_onnx writes MLPs only (no max-pool layers)")
        current = out
    graph = helper.make_graph(
        nodes, "random_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", chain.n_inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", chain.n_outputs])],
        initialisers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def float32_rounded(chain: Chain) -> Chain:
    """The float64 chain whose weights are exactly the float32 values `save_onnx` stores."""
    def rounded(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float32).to(torch.float64)

    return Chain(tuple(AffineLayer(rounded(l.weight), rounded(l.bias)) if isinstance(l, AffineLayer) else l
                       for l in chain.layers))


def exact_weights(chain: Chain) -> list[tuple[list[list[Fraction]], list[Fraction]] | str]:
    """The chain as exact rationals: ``(W, b)`` per affine layer, the kind per activation."""
    out: list = []
    for layer in chain.layers:
        if isinstance(layer, AffineLayer):
            W = [[Fraction(float(v)) for v in row] for row in layer.weight.tolist()]
            b = [Fraction(float(v)) for v in layer.bias.tolist()]
            out.append((W, b))
        else:
            assert isinstance(layer, ActivationLayer)
            out.append(layer.kind)
    return out


def conv_onnx_model(seed: RngLike, channels: int = 1, size: int = 4, filters: int = 2,
                    n_out: int = 2) -> onnx.ModelProto:
    """``Conv(3x3, pad 1) → Relu → MaxPool(2x2, stride 2) → Flatten → Gemm`` on a tiny image."""
    rng = _rng(seed)
    w = rng.normal(scale=0.6, size=(filters, channels, 3, 3)).astype(np.float32)
    b = rng.normal(scale=0.3, size=filters).astype(np.float32)
    pooled = filters * (size // 2) ** 2
    w2 = rng.normal(scale=1.0 / np.sqrt(pooled), size=(n_out, pooled)).astype(np.float32)
    b2 = rng.normal(scale=0.3, size=n_out).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "cw"), (b, "cb"), (w2, "gw"), (b2, "gb"))]
    graph = helper.make_graph(
        nodes, "random_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@lru_cache(maxsize=64)
def conv_chain(seed: int, channels: int = 1, size: int = 4) -> Chain:
    """A conv network lowered to a `Chain` (dense affine + ReLU + MaxPool windows); the ONNX file
    lives only while it is imported."""
    with tempfile.TemporaryDirectory(prefix="verirepair_random_conv_") as folder:
        path = Path(folder) / f"conv_{seed}_{channels}_{size}.onnx"
        onnx.save(conv_onnx_model(seed, channels, size), str(path))
        return Chain.of_graph(build_graph(load_network(path)))

def interval_pre_bounds(chain: Chain, box, loosen: float = 0.0, slack: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sound input bounds of every non-affine layer by plain interval arithmetic, independent of
    the bound engine under test. ``loosen`` widens the recorded bounds (still sound); ``slack``
    widens every affine output relatively and absolutely, so rounding cannot cut off a value."""
    lo, hi = box.lower.copy(), box.upper.copy()
    out = []
    for layer in chain.layers:
        if isinstance(layer, AffineLayer):
            W, b = layer.weight.numpy(), layer.bias.numpy()
            mid, rad = W @ ((lo + hi) / 2) + b, np.abs(W) @ ((hi - lo) / 2)
            widen = slack * (1 + np.abs(mid) + rad)
            lo, hi = mid - rad - widen, mid + rad + widen
            continue
        out.append((lo - loosen, hi + loosen))
        if isinstance(layer, MaxPoolLayer):
            w = layer.windows.numpy()
            lo, hi = lo[w].max(axis=1), hi[w].max(axis=1)
        else:
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return out


def max_output_problem(seed: int, n_in: int, hidden: list[int], margin: float, folder: Path) -> tuple[Path, Path]:
    """A random ReLU MLP (2 outputs) saved as ``folder/net.onnx`` and ``folder/prop.vnnlib``: on
    the box [-0.3, 0.3]^n_in, the property asks for y_0 >= (the maximum of 20,000 samples) + margin,
    so it is unsat for a margin that clears the true maximum and sat below it."""
    rng = np.random.default_rng(seed)
    chain = random_mlp(rng, n_in, hidden, 2, "relu", scale=1.5)
    onnx_path = save_onnx(chain, folder / "net.onnx")
    lower, upper = np.full(n_in, -0.3), np.full(n_in, 0.3)
    samples = torch.tensor(lower + rng.random((20000, n_in)) * (upper - lower))
    top = chain.forward(samples)[:, 0].max().item()
    spec = Spec(n_in, 2, (Region(Box(lower, upper), (Clause(np.array([[-1.0, 0.0]]), np.array([-(top + margin)])),)),))
    vnnlib_path = folder / "prop.vnnlib"
    write_vnnlib(spec, vnnlib_path)
    return onnx_path, vnnlib_path
