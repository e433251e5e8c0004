"""One small converter per supported ONNX operator.

A converter takes the node's attributes (and the model's opset) and returns a torch callable over
the node's input tensors (an absent optional input is passed as None). The callables run on
*input-dependent* tensors only: everything computable from constants is folded by the importer with
ONNX's reference implementation, so the data input of every operation here carries the batch
dimension first. That is where the runtime differs from the file: the file declares a batch of 1
(or a symbolic one) and the runtime batch may be larger, so operations that could touch the batch
axis either keep it (Reshape's first target entry is the batch) or refuse, with a `ValueError`
naming the reason. `CONVERTERS` is the support table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from onnx import TensorProto

from .model import Operation

Converter = Callable[[dict[str, Any], int], Operation]
CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return register


def _text(attrs: dict[str, Any], name: str, default: str) -> str:
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints(value: torch.Tensor | Sequence[int] | None) -> list[int] | None:
    if value is None:
        return None
    return [int(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else value)]


def _axis(axis: int, rank: int, what: str) -> int:
    """``axis`` in ``[0, rank)``; an axis naming the batch dimension is refused."""
    if not -rank <= axis < rank:
        raise ValueError(f"{what} axis {axis} is out of range for rank {rank}")
    axis %= rank
    if axis == 0:
        raise ValueError(f"{what} along the batch axis is not supported")
    return axis


def _torch_padding(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """Per-axis begin/end pads of the trailing axes → F.pad order (last axis first)."""
    order: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends)):
        order += [begin, end]
    return order


# ----- element-wise ----------------------------------------------------------------------------
@converter("Identity", "Dropout")
def _identity(attrs: dict[str, Any], opset: int) -> Operation:
    def identity(x: torch.Tensor, ratio: torch.Tensor | None = None,
                 training_mode: torch.Tensor | None = None) -> torch.Tensor:
        if training_mode is not None and bool(training_mode):
            raise ValueError("Dropout in training mode is not supported")
        return x

    return identity


@converter("Relu")
def _relu(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.relu


@converter("LeakyRelu")
def _leaky_relu(attrs: dict[str, Any], opset: int) -> Operation:
    alpha = float(attrs.get("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


@converter("Sigmoid")
def _sigmoid(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.sigmoid


@converter("Tanh")
def _tanh(attrs: dict[str, Any], opset: int) -> Operation:
    return torch.tanh


def _clamp(x: torch.Tensor, low: float | torch.Tensor | None, high: float | torch.Tensor | None) -> torch.Tensor:
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


@converter("Clip")
def _clip(attrs: dict[str, Any], opset: int) -> Operation:
    """Opset < 11: bounds are attributes; from 11 they are optional inputs (either may be absent)."""
    if opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
        return lambda x: _clamp(x, None if low is None else float(low), None if high is None else float(high))

    def clip(x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None) -> torch.Tensor:
        return _clamp(x, None if low is None else low.to(x.dtype), None if high is None else high.to(x.dtype))

    return clip


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


# ONNX element types a Cast may target: floats keep the evaluation dtype (float64 bounds stay
# float64), integers are exact; a narrower float (float16, bfloat16) would round and is refused.
_CAST_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE}
_CAST_INTEGERS = {TensorProto.INT32: torch.int32, TensorProto.INT64: torch.int64}


@converter("Cast")
def _cast(attrs: dict[str, Any], opset: int) -> Operation:
    to = int(attrs["to"])
    if to in _CAST_INTEGERS:
        return lambda x: x.to(_CAST_INTEGERS[to])
    if to not in _CAST_FLOATS:
        raise ValueError(f"Cast to {TensorProto.DataType.Name(to)} is not supported")
    return lambda x: x


# ----- linear layers ---------------------------------------------------------------------------
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


def _conv_geometry(attrs: dict[str, Any], rank: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """Strides, dilations and explicit begin/end pads of a convolution or pooling over ``rank`` axes."""
    auto_pad = _text(attrs, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise ValueError(f"auto_pad={auto_pad} is not supported")
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    pads = [0] * (2 * rank) if auto_pad == "VALID" else list(attrs.get("pads", [0] * (2 * rank)))
    return strides, dilations, pads[:rank], pads[rank:]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@converter("Conv")
def _conv(attrs: dict[str, Any], opset: int) -> Operation:
    group = int(attrs.get("group", 1))

    def convolve(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = w.dim() - 2
        strides, dilations, begins, ends = _conv_geometry(attrs, rank)
        if any(begins + ends):
            x = F.pad(x, _torch_padding(begins, ends))
        return _CONV[rank](x, w.to(x.dtype), None if b is None else b.to(x.dtype),
                           stride=strides, dilation=dilations, groups=group)

    return convolve


@converter("ConvTranspose")
def _conv_transpose(attrs: dict[str, Any], opset: int) -> Operation:
    """The full transposed convolution, then ``output_padding`` added and ``pads`` cropped at
    each end, as the ONNX output-size formula says (torch's own padding is symmetric only)."""
    group = int(attrs.get("group", 1))
    if "output_shape" in attrs:
        raise ValueError("ConvTranspose with output_shape is not supported (give pads instead)")

    def convolve_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = w.dim() - 2
        strides, dilations, begins, ends = _conv_geometry(attrs, rank)
        extra = list(attrs.get("output_padding", [0] * rank))
        full = _CONV_TRANSPOSE[rank](x, w.to(x.dtype), None, stride=strides, dilation=dilations, groups=group)
        out = F.pad(full, _torch_padding([-p for p in begins], [e - p for e, p in zip(extra, ends)]))
        return out if b is None else out + b.to(x.dtype).reshape((1, -1) + (1,) * rank)

    return convolve_transpose


@converter("BatchNormalization")
def _batch_norm(attrs: dict[str, Any], opset: int) -> Operation:
    epsilon = float(attrs.get("epsilon", 1e-5))
    if int(attrs.get("training_mode", 0)):
        raise ValueError("BatchNormalization in training mode is not supported")
    if opset < 9 and int(attrs.get("spatial", 1)) == 0:
        raise ValueError("BatchNormalization with spatial=0 is not supported")

    def batch_norm(x, scale, bias, mean, var) -> torch.Tensor:  # type: ignore[no-untyped-def]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        factor = (scale / torch.sqrt(var + epsilon)).reshape(shape)
        return (x - mean.reshape(shape)) * factor + bias.reshape(shape)

    return batch_norm


# ----- pooling ---------------------------------------------------------------------------------
def _pool_padding(attrs: dict[str, Any], size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int], begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """End pads that make room for the windows ceil_mode adds (zero without ceil_mode).

    ONNX counts ``ceil((L + pads - span) / stride) + 1`` windows, but a last window that would
    start in the end padding is dropped (as onnxruntime and torch do)."""
    extra = []
    for n, k, s, d, b, e in zip(size, kernel, strides, dilations, begins, ends):
        span = (k - 1) * d + 1
        count = (n + b + e - span) // s + 1
        if int(attrs.get("ceil_mode", 0)):
            count = -(-(n + b + e - span) // s) + 1
            if (count - 1) * s >= n + b:
                count -= 1
        extra.append(max(0, (count - 1) * s + span - (n + b + e)))
    return extra


def _pool_shape(attrs: dict[str, Any]) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    kernel = list(attrs["kernel_shape"])
    strides, dilations, begins, ends = _conv_geometry(attrs, len(kernel))
    return kernel, strides, dilations, begins, ends


_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


@converter("AveragePool")
def _average_pool(attrs: dict[str, Any], opset: int) -> Operation:
    """Window sums over the explicitly zero-padded input divided by the window's count: every
    position of the padded input (count_include_pad=1) or only the input's own positions."""
    kernel, strides, dilations, begins, ends = _pool_shape(attrs)
    if any(d != 1 for d in dilations):
        raise ValueError("AveragePool with dilations is not supported")
    include_pad = bool(attrs.get("count_include_pad", 0))
    pool = _AVG_POOL[len(kernel)]

    def window_sums(t: torch.Tensor) -> torch.Tensor:
        return pool(t, kernel, strides) * math.prod(kernel)

    def average_pool(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        extra = _pool_padding(attrs, size, kernel, strides, dilations, begins, ends)
        ceil_ends = [e + c for e, c in zip(ends, extra)]
        totals = window_sums(F.pad(x, _torch_padding(begins, ceil_ends)))
        ones = torch.ones((1, 1) + tuple(size), dtype=x.dtype, device=x.device)
        counted = (F.pad(F.pad(ones, _torch_padding(begins, ends), value=1.0), _torch_padding([0] * len(kernel), extra))
                   if include_pad else F.pad(ones, _torch_padding(begins, ceil_ends)))
        return totals / window_sums(counted)

    return average_pool


@converter("GlobalAveragePool")
def _global_average_pool(attrs: dict[str, Any], opset: int) -> Operation:
    return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@converter("MaxPool")
def _max_pool(attrs: dict[str, Any], opset: int) -> Operation:
    kernel, strides, dilations, begins, ends = _pool_shape(attrs)
    pool = _MAX_POOL[len(kernel)]

    def max_pool(x: torch.Tensor) -> torch.Tensor:
        extra = _pool_padding(attrs, x.shape[2:], kernel, strides, dilations, begins, ends)
        padding = _torch_padding(begins, [e + c for e, c in zip(ends, extra)])
        if any(padding):
            x = F.pad(x, padding, value=-math.inf)
        return pool(x, kernel, strides, dilation=dilations)

    return max_pool


# ----- shapes ----------------------------------------------------------------------------------
@converter("Flatten")
def _flatten(attrs: dict[str, Any], opset: int) -> Operation:
    axis = int(attrs.get("axis", 1))

    def flatten(x: torch.Tensor) -> torch.Tensor:
        start = axis % x.dim() if axis < 0 else axis
        if start == 0:
            raise ValueError(f"Flatten axis={axis} would merge the batch dimension")
        return x.reshape(x.shape[0] * math.prod(x.shape[1:start]), -1)

    return flatten


@converter("Reshape")
def _reshape(attrs: dict[str, Any], opset: int) -> Operation:
    """The target's first entry is the batch: 1, -1 or 0 there means the runtime batch size."""
    allow_zero = bool(attrs.get("allowzero", 0))

    def reshape(x: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        target = _ints(shape if shape is not None else attrs["shape"]) or []
        if not target or target[0] not in (1, -1) + ((0,) if not allow_zero else ()):
            raise ValueError(f"Reshape to {target} does not keep the batch dimension first")
        rest = [x.shape[i] if v == 0 and not allow_zero else v for i, v in enumerate(target) if i > 0]
        if target[0] == -1 and -1 in rest:
            raise ValueError(f"Reshape to {target} has two -1 entries")
        known = math.prod(v for v in rest if v != -1)
        per_sample = math.prod(x.shape[1:])
        if (-1 not in rest and known != per_sample) or (-1 in rest and (known == 0 or per_sample % known)):
            raise ValueError(f"Reshape of {list(x.shape)} to {target} would mix the batch dimension")
        return x.reshape([x.shape[0]] + rest)

    return reshape


@converter("Transpose")
def _transpose(attrs: dict[str, Any], opset: int) -> Operation:
    perm = attrs.get("perm")

    def transpose(x: torch.Tensor) -> torch.Tensor:
        return x.permute(list(perm)) if perm is not None else x.permute(*reversed(range(x.dim())))

    return transpose


@converter("Squeeze")
def _squeeze(attrs: dict[str, Any], opset: int) -> Operation:
    """Without axes ONNX removes every axis of size 1, the file's batch of 1 too: refused."""

    def squeeze(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        axis_list = _ints(axes if axes is not None else attrs.get("axes"))
        if axis_list is None:
            raise ValueError("Squeeze without axes would remove the batch axis")
        dims = sorted({_axis(a, x.dim(), "Squeeze") for a in axis_list})
        if any(x.shape[d] != 1 for d in dims):
            raise ValueError(f"Squeeze of axes {axis_list} of shape {list(x.shape)}: an axis is not of size 1")
        return x.reshape([n for d, n in enumerate(x.shape) if d not in dims])

    return squeeze


@converter("Unsqueeze")
def _unsqueeze(attrs: dict[str, Any], opset: int) -> Operation:
    def unsqueeze(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        axis_list = _ints(axes if axes is not None else attrs.get("axes")) or []
        rank = x.dim() + len(axis_list)
        for axis in sorted(_axis(a, rank, "Unsqueeze") for a in axis_list):
            x = x.unsqueeze(axis)
        return x

    return unsqueeze


@converter("Concat")
def _concat(attrs: dict[str, Any], opset: int) -> Operation:
    axis = int(attrs["axis"])

    def concat(*xs: torch.Tensor) -> torch.Tensor:
        dim = _axis(axis, xs[0].dim(), "Concat")
        # Constants carry the file's batch size 1: repeat them to the runtime batch size.
        batch = max(x.shape[0] for x in xs)
        xs = tuple(x.expand((batch,) + tuple(x.shape[1:])) if x.shape[0] == 1 else x for x in xs)
        return torch.cat(xs, dim=dim)

    return concat


def _slice_indices(size: int, start: int, end: int, step: int) -> range:
    """ONNX Slice's clamping of start and end is Python's slice semantics."""
    if step == 0:
        raise ValueError("Slice step 0")
    return range(*slice(start, end, step).indices(size))


@converter("Slice")
def _slice(attrs: dict[str, Any], opset: int) -> Operation:
    """Opset < 10: starts/ends/axes attributes; from 10 they (and steps) are inputs. Along the
    batch axis only the whole batch of 1 the file declares may be selected (it means every row)."""

    def slice_(x: torch.Tensor, starts: torch.Tensor | None = None, ends: torch.Tensor | None = None,
               axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
        if opset < 10:
            starts_l, ends_l, axes_l, steps_l = _ints(attrs["starts"]), _ints(attrs["ends"]), _ints(attrs.get("axes")), None
        else:
            starts_l, ends_l, axes_l, steps_l = _ints(starts), _ints(ends), _ints(axes), _ints(steps)
        assert starts_l is not None and ends_l is not None
        axes_l = axes_l if axes_l is not None else list(range(len(starts_l)))
        steps_l = steps_l if steps_l is not None else [1] * len(starts_l)
        for axis, start, end, step in zip(axes_l, starts_l, ends_l, steps_l):
            if axis % x.dim() == 0:
                if len(_slice_indices(1, start, end, step)) != 1:
                    raise ValueError(f"Slice [{start}:{end}:{step}] along the batch axis is not supported")
                continue
            dim = _axis(axis, x.dim(), "Slice")
            index = _slice_indices(x.shape[dim], start, end, step)
            x = x.index_select(dim, torch.tensor(list(index), dtype=torch.int64, device=x.device))
        return x

    return slice_


@converter("Split")
def _split(attrs: dict[str, Any], opset: int) -> Operation:
    """Sizes from the ``split`` attribute (opset < 13) or input, else ``num_outputs`` parts (the
    importer sets it to the node's output count for the older implicit equal split)."""

    def split(x: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        dim = _axis(int(attrs.get("axis", 0)), x.dim(), "Split")
        parts = _ints(sizes if sizes is not None else attrs.get("split"))
        if parts is None:
            count = int(attrs["num_outputs"])
            chunk = -(-x.shape[dim] // count)
            parts = [min(chunk, x.shape[dim] - i * chunk) for i in range(count)]
        if sum(parts) != x.shape[dim] or min(parts) < 0:
            raise ValueError(f"Split sizes {parts} do not add up to the axis size {x.shape[dim]}")
        return tuple(torch.split(x, parts, dim=dim))

    return split


@converter("Gather")
def _gather(attrs: dict[str, Any], opset: int) -> Operation:
    def gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        dim = _axis(int(attrs.get("axis", 0)), x.dim(), "Gather")
        flat = index.reshape(-1).long() % x.shape[dim]
        return x.index_select(dim, flat).reshape(x.shape[:dim] + index.shape + x.shape[dim + 1:])

    return gather


@converter("Pad")
def _pad(attrs: dict[str, Any], opset: int) -> Operation:
    """Constant mode. Opset < 11: pads and value are attributes; from 11 inputs (``axes`` from 18)."""
    mode = _text(attrs, "mode", "constant")
    if mode != "constant":
        raise ValueError(f"Pad mode={mode} is not supported")

    def pad(x: torch.Tensor, pads: torch.Tensor | None = None, value: torch.Tensor | None = None,
            axes: torch.Tensor | None = None) -> torch.Tensor:
        pad_list = _ints(pads if opset >= 11 else attrs.get("paddings", attrs.get("pads"))) or []
        fill = float(value) if value is not None else float(attrs.get("value", 0.0))
        axis_list = [a % x.dim() for a in (_ints(axes) or range(x.dim()))]
        count = len(axis_list)
        begins, ends = [0] * x.dim(), [0] * x.dim()
        for axis, begin, end in zip(axis_list, pad_list[:count], pad_list[count:]):
            begins[axis], ends[axis] = begin, end
        if begins[0] or ends[0]:
            raise ValueError("Pad on the batch axis is not supported")
        return F.pad(x, _torch_padding(begins[1:], ends[1:]), value=fill)

    return pad
