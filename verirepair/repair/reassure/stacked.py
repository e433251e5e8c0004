"""The patches as stacked layers: every weight stored once, the file linear in the number of patches.

`patch.patch_mlp` writes the patches as one plain ReLU chain whose second layer is block-diagonal:
its dense matrix has (patches) × (support units of all patches) entries, so the file grows with the
square of the number of patches, and every support row is stored twice (units ``γs + 1`` and
``γs``). An MNIST patch has about 500 support rows over 784 inputs: some 400 points pass
protobuf's 2 GB limit. Here, with ``P`` patches of at most ``k`` support rows and ``m`` outputs::

    z    = Gemm(x, S, s)                     S = -γ_p A_p stacked, s = γ_p b_p     [B, P·k]
    clip = Relu(z + 1) - Relu(z)             `support`'s clip_γ, both units on one z
    g    = Relu(Reshape(clip, [P, k]) · 1_k + 1 - k)                              [B, P]
    constant patches:  Σ_p g_p d_p = Gemm(g, D)        (g >= 0, so no ReLU around it)
    affine patches:    u = Relu(Gemm(x, C, d + K))     reshaped to [B, P, m]
                       h = Relu(u + K g - 2K) - Relu(K g - u)    (`patch.py`'s h⁺ and h⁻)
                       Σ_p h_p = Gemm(Reshape(h, [P·m]), identities side by side)

A patch with fewer than ``k`` rows is padded with zero rows of offset 0 (clip 1: a row that
always holds), so ``g`` is `support.support_value` for every patch, and the chain computes
``Σ_A h_A`` exactly as `patch_mlp`'s chain does on the domain. Constant and affine patches have
a support stack each. The file holds ``P·k·n`` support weights plus ``P·m·(n + m + 3)`` for affine
patches and ``P·m`` for constant ones.

Only standard operators (Gemm with its bias, MatMul, Add, Sub, Mul, Relu, Reshape: the same
meaning from opset 7 on), linear nodes and ReLUs, so the bound graph imports the file.
Point-wise repair (many patches, the file checked in onnxruntime) writes this form; area repair
keeps `patch_mlp`'s chain, the form its check-and-fix loop is tuned on.
"""

from __future__ import annotations

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper

from ...network import Network
from ..export_io import constant, flat_input, flat_output
from .export import PREFIX, chain_model
from .patch import RegionPatch


class _Writer:
    """Nodes and initializers of the chain, with fresh value names."""

    def __init__(self, like: Network) -> None:
        self.like = like
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: NDArray[np.float64]) -> str:
        self.initializers.append(constant(f"{PREFIX}{name}", array, self.like))
        return f"{PREFIX}{name}"

    def shape(self, name: str, dims: list[int]) -> str:
        self.initializers.append(onnx.numpy_helper.from_array(np.array(dims, dtype=np.int64), f"{PREFIX}{name}"))
        return f"{PREFIX}{name}"

    def node(self, op_type: str, inputs: list[str], output: str, **attributes: int) -> str:
        final = output == flat_output(self.like, PREFIX)
        value = output if final else f"{PREFIX}{output}"
        self.nodes.append(helper.make_node(op_type, inputs, [value], name=f"{PREFIX}patch_sum" if final else value,
                                           **attributes))
        return value


def _support(writer: _Writer, x: str, patches: list[RegionPatch], tag: str) -> str:
    """The value [B, P] of every patch's support network `g`."""
    k = max(p.A.shape[0] for p in patches)
    n = patches[0].A.shape[1]
    rows = np.zeros((len(patches), k, n))
    offsets = np.zeros((len(patches), k))
    for i, patch in enumerate(patches):
        rows[i, :patch.A.shape[0]] = -patch.gamma * patch.A
        offsets[i, :patch.A.shape[0]] = patch.gamma * patch.b
    z = writer.node("Gemm", [x, writer.constant(f"{tag}_rows", rows.reshape(-1, n)),
                             writer.constant(f"{tag}_offsets", offsets.reshape(-1))], f"{tag}_z", transB=1)
    above = writer.node("Relu", [writer.node("Add", [z, writer.constant(f"{tag}_one", np.ones(1))], f"{tag}_z1")],
                        f"{tag}_relu_z1")
    clip = writer.node("Sub", [above, writer.node("Relu", [z], f"{tag}_relu_z")], f"{tag}_clip")
    per_patch = writer.node("Reshape", [clip, writer.shape(f"{tag}_per_patch_shape", [-1, len(patches), k])],
                            f"{tag}_clip_per_patch")
    total = writer.node("MatMul", [per_patch, writer.constant(f"{tag}_ones", np.ones((k, 1)))], f"{tag}_sum")
    g = writer.node("Relu", [writer.node("Add", [total, writer.constant(f"{tag}_bias", np.array([1.0 - k]))],
                                         f"{tag}_sum_bias")], f"{tag}_g3")
    return writer.node("Reshape", [g, writer.shape(f"{tag}_g_shape", [-1, len(patches)])], f"{tag}_g")


def _constant_sum(writer: _Writer, x: str, patches: list[RegionPatch], output: str) -> str:
    g = _support(writer, x, patches, "const")
    shifts = np.stack([p.d for p in patches], axis=1)  # [m, P]
    m = shifts.shape[0]
    return writer.node("Gemm", [g, writer.constant("const_shifts", shifts), writer.constant("const_zero", np.zeros(m))],
                       output, transB=1)


def _affine_sum(writer: _Writer, x: str, patches: list[RegionPatch], output: str) -> str:
    g = _support(writer, x, patches, "affine")
    count, m = len(patches), patches[0].C.shape[0]
    K = np.array([[p.K] for p in patches])  # [P, 1]
    maps = np.vstack([p.C for p in patches])
    offsets = np.concatenate([p.d + p.K for p in patches])
    u_flat = writer.node("Relu", [writer.node("Gemm", [x, writer.constant("affine_maps", maps),
                                                       writer.constant("affine_map_offsets", offsets)],
                                              "affine_p_plus_K", transB=1)], "affine_u_flat")
    u = writer.node("Reshape", [u_flat, writer.shape("affine_u_shape", [-1, count, m])], "affine_u")
    g3 = writer.node("Reshape", [g, writer.shape("affine_g3_shape", [-1, count, 1])], "affine_g_column")
    spread = writer.node("MatMul", [g3, writer.constant("affine_spread", np.ones((1, m)))], "affine_g_spread")
    Kg = writer.node("Mul", [spread, writer.constant("affine_K", K)], "affine_Kg")
    raised = writer.node("Sub", [writer.node("Add", [u, Kg], "affine_u_plus_Kg"), writer.constant("affine_2K", 2 * K)],
                         "affine_plus_pre")
    plus = writer.node("Relu", [raised], "affine_plus")
    minus = writer.node("Relu", [writer.node("Sub", [Kg, u], "affine_minus_pre")], "affine_minus")
    h = writer.node("Sub", [plus, minus], "affine_h")
    h_flat = writer.node("Reshape", [h, writer.shape("affine_h_shape", [-1, count * m])], "affine_h_flat")
    return writer.node("Gemm", [h_flat, writer.constant("affine_identities", np.tile(np.eye(m), (1, count))),
                                writer.constant("affine_zero", np.zeros(m))], output, transB=1)


def stacked_patches_onnx(patches: list[RegionPatch], like: Network,
                         metadata: dict[str, object] | None = None) -> onnx.ModelProto:
    """``Σ_A h_A`` as a model on ``like``'s input and output (see the module docstring)."""
    writer = _Writer(like)
    x = flat_input(like, writer.nodes, PREFIX)
    out = flat_output(like, PREFIX)
    groups = [(_constant_sum, [p for p in patches if p.constant], "constant_sum"),
              (_affine_sum, [p for p in patches if not p.constant], "affine_sum_out")]
    present = [(write, group, name) for write, group, name in groups if group]
    if not present:
        zeros = np.zeros((like.n_outputs, like.n_inputs))
        writer.node("Gemm", [x, writer.constant("zero", zeros), writer.constant("zero_bias", np.zeros(like.n_outputs))],
                    out, transB=1)
    elif len(present) == 1:
        write, group, _ = present[0]
        write(writer, x, group, out)
    else:
        sums = [write(writer, x, group, name) for write, group, name in present]
        writer.node("Add", sums, out)
    return chain_model(writer.nodes, writer.initializers, like, metadata)
