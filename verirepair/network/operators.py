"""One small converter per supported ONNX operator.

A converter takes the node's attributes (and the model's opset) and returns a torch callable over
the node's input tensors. Tensors carry a batch dimension first; shape-changing converters keep it.
`CONVERTERS` is the support table: anything not in it is reported by the importer, all at once.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from .model import Operation

Converter = Callable[[dict[str, Any], int], Operation]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return register


def _spatial_padding(pads: list[int], rank: int) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] → F.pad order (last dim first: b_last, e_last, ...)."""
    begins, ends = pads[:rank], pads[rank:]
    order: list[int] = []
    for axis in reversed(range(rank)):
        order += [begins[axis], ends[axis]]
    return order


def _check_auto_pad(attrs: dict[str, Any]) -> None:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise ValueError(f"auto_pad={auto_pad} is not supported")


@converter("Identity", "Dropout")
def _identity(attrs: dict[str, Any], opset: int) -> Operation:
    return lambda x, *rest: x


@converter("Relu")
def _relu(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.relu


@converter("Sigmoid")
def _sigmoid(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.sigmoid


@converter("Tanh")
def _tanh(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.tanh


@converter("Add")
def _add(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.add


@converter("Sub")
def _sub(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.sub


@converter("Mul")
def _mul(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.mul


@converter("Div")
def _div(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.div


@converter("Neg")
def _neg(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.neg


@converter("MatMul")
def _matmul(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.matmul


@converter("Gemm")
def _gemm(attrs: dict[str, Any], opset: int) -> Operation:
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))

    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        a = a.transpose(-1, -2) if trans_a else a
        b = b.transpose(-1, -2) if trans_b else b
        out = alpha * (a @ b)
        return out if c is None else out + beta * c

    return gemm


@converter("Flatten")
def _flatten(attrs: dict[str, Any], opset: int) -> Operation:
    axis = int(attrs.get("axis", 1))
    if axis < 1:
        raise ValueError(f"Flatten axis={axis} would merge the batch dimension")

    def flatten(x: torch.Tensor) -> torch.Tensor:
        lead = 1
        for size in x.shape[1:axis]:
            lead *= size
        return x.reshape(x.shape[0] * lead, -1) if axis > 1 else x.reshape(x.shape[0], -1)

    return flatten


@converter("Reshape")
def _reshape(attrs: dict[str, Any], opset: int) -> Operation:
    def reshape(x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        target = [int(v) for v in (shape.tolist() if shape is not None else attrs["shape"])]
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        # The first entry is the batch dimension: keep the runtime batch size.
        return x.reshape([x.shape[0]] + target[1:])

    return reshape


@converter("Shape")
def _shape(attrs: dict[str, Any], opset: int) -> Operation:
    return lambda x: torch.tensor(list(x.shape), dtype=torch.int64)


def _make_axes_op(unsqueeze: bool) -> Converter:
    def convert(attrs: dict[str, Any], opset: int) -> Operation:
        def op(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
            axis_list = [int(a) for a in (axes.tolist() if axes is not None else attrs.get("axes", []))]
            if unsqueeze:
                for axis in sorted(a % (x.dim() + len(axis_list)) for a in axis_list):
                    x = x.unsqueeze(axis)
                return x
            if not axis_list:
                axis_list = [i for i in range(1, x.dim()) if x.shape[i] == 1]
            return x.squeeze(tuple(a % x.dim() for a in axis_list))

        return op

    return convert


CONVERTERS["Unsqueeze"] = _make_axes_op(unsqueeze=True)
CONVERTERS["Squeeze"] = _make_axes_op(unsqueeze=False)


@converter("Transpose")
def _transpose(attrs: dict[str, Any], opset: int) -> Operation:
    perm = attrs.get("perm")

    def transpose(x: torch.Tensor) -> torch.Tensor:
        return x.permute(list(perm)) if perm is not None else x.permute(*reversed(range(x.dim())))

    return transpose


@converter("Concat")
def _concat(attrs: dict[str, Any], opset: int) -> Operation:
    axis = int(attrs["axis"])

    def concat(*xs: torch.Tensor) -> torch.Tensor:
        # Constants carry the ONNX batch size 1; repeat them to the runtime batch size
        # (only when joining along a non-batch axis of same-rank tensors).
        batch = max(x.shape[0] for x in xs)
        if xs[0].dim() > 1 and axis % xs[0].dim() != 0 and all(x.dim() == xs[0].dim() for x in xs):
            xs = tuple(x.expand((batch,) + tuple(x.shape[1:])) if x.shape[0] == 1 else x for x in xs)
        return torch.cat(xs, dim=axis)

    return concat


@converter("Gather")
def _gather(attrs: dict[str, Any], opset: int) -> Operation:
    axis = int(attrs.get("axis", 0))
    return lambda x, index: torch.index_select(x, axis, index.reshape(-1).long()).reshape(
        x.shape[:axis] + index.shape + x.shape[axis + 1:]
    )


@converter("Cast")
def _cast(attrs: dict[str, Any], opset: int) -> Operation:
    # Floating casts keep the evaluation dtype (float64 bounds stay float64); integer casts are exact.
    to = int(attrs["to"])
    integer = {6: torch.int32, 7: torch.int64}
    if to in integer:
        return lambda x: x.to(integer[to])
    return lambda x: x


@converter("Constant")
def _constant(attrs: dict[str, Any], opset: int) -> Operation:
    value = attrs["value"]
    return lambda: value


@converter("Conv")
def _conv(attrs: dict[str, Any], opset: int) -> Operation:
    _check_auto_pad(attrs)
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1] * len(strides)))
    group = int(attrs.get("group", 1))
    pads = list(attrs.get("pads", [0] * (2 * len(strides))))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(strides)]

    def convolve(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        x = F.pad(x, _spatial_padding(pads, len(strides))) if any(pads) else x
        return conv(x, w, b, stride=strides, dilation=dilations, groups=group)

    return convolve


@converter("BatchNormalization")
def _batch_norm(attrs: dict[str, Any], opset: int) -> Operation:
    epsilon = float(attrs.get("epsilon", 1e-5))

    def batch_norm(x, scale, bias, mean, var) -> torch.Tensor:  # type: ignore[no-untyped-def]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        factor = (scale / torch.sqrt(var + epsilon)).reshape(shape)
        return (x - mean.reshape(shape)) * factor + bias.reshape(shape)

    return batch_norm


@converter("AveragePool")
def _average_pool(attrs: dict[str, Any], opset: int) -> Operation:
    _check_auto_pad(attrs)
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * len(kernel)))
    pads = list(attrs.get("pads", [0] * (2 * len(kernel))))
    include_pad = bool(attrs.get("count_include_pad", 0))
    if int(attrs.get("ceil_mode", 0)):
        raise ValueError("AveragePool ceil_mode=1 is not supported")

    def average_pool(x: torch.Tensor) -> torch.Tensor:
        if not any(pads):
            return F.avg_pool2d(x, kernel, strides)
        padded = F.pad(x, _spatial_padding(pads, len(kernel)))
        total = F.avg_pool2d(padded, kernel, strides, divisor_override=1)
        if include_pad:
            return total / float(kernel[0] * kernel[1])
        ones = F.pad(torch.ones_like(x[:1, :1]), _spatial_padding(pads, len(kernel)))
        return total / F.avg_pool2d(ones, kernel, strides, divisor_override=1)

    return average_pool


@converter("MaxPool")
def _max_pool(attrs: dict[str, Any], opset: int) -> Operation:
    _check_auto_pad(attrs)
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * len(kernel)))
    pads = list(attrs.get("pads", [0] * (2 * len(kernel))))
    if any(pads) or int(attrs.get("ceil_mode", 0)) or any(d != 1 for d in attrs.get("dilations", [])):
        raise ValueError("MaxPool with padding, dilation or ceil_mode is not supported yet")
    return lambda x: F.max_pool2d(x, kernel, strides)


@converter("Pad")
def _pad(attrs: dict[str, Any], opset: int) -> Operation:
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ValueError(f"Pad mode={mode} is not supported")

    def pad(x: torch.Tensor, pads: torch.Tensor | None = None, value: torch.Tensor | None = None) -> torch.Tensor:
        pad_list = [int(p) for p in (pads.tolist() if pads is not None else attrs["pads"])]
        fill = float(value) if value is not None else float(attrs.get("value", 0.0))
        if any(pad_list[0:2] + pad_list[len(pad_list) // 2: len(pad_list) // 2 + 2]):
            raise ValueError("Pad on the batch or channel axis is not supported")
        rank = len(pad_list) // 2
        return F.pad(x, _spatial_padding(pad_list, rank)[: 2 * (rank - 2)], value=fill)

    return pad
