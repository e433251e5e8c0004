"""Reference semantics: run the original ONNX file in onnxruntime."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import InputError
from ..files import is_gzip, read_input_bytes
from .model import Network


@lru_cache(maxsize=8)
def _cached_session(path: str, digest: str, compressed: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    # A compressed model runs from its decompressed bytes; a plain one from its path, so that
    # onnxruntime finds external tensor data next to it.
    model = read_input_bytes(path) if compressed else path
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _session(path: Path) -> ort.InferenceSession:
    """The session of the file as it is now: the cache is keyed on the file's content, so a file
    rewritten in place (a repair candidate, a user's edit) is never answered by the old one."""
    data = path.read_bytes()
    return _cached_session(str(path), hashlib.sha256(data).hexdigest(), is_gzip(data))


def run_onnxruntime(network: Network, x: np.ndarray) -> np.ndarray:
    """Outputs (float64, [batch, n_outputs]) of the ONNX file for flat inputs ``x`` [batch, n_inputs].

    Each point runs on its own, cast to the model's input dtype and reshaped to the declared
    input shape, because benchmark models often fix the batch size to 1.
    """
    assert network.path is not None, "reference execution needs the network's file"
    session = _session(network.path.resolve())
    points = np.atleast_2d(np.asarray(x))
    outputs = []
    for point in points:
        feed = point.astype(network.input_dtype).reshape(network.input_shape)
        (y,) = session.run([network.output_name], {network.input_name: feed})
        outputs.append(np.asarray(y, dtype=np.float64).reshape(-1))
    return np.stack(outputs)


# The import check allows this many times the float rounding that our own import shows between the
# model's element type and float64: onnxruntime rounds as much as our evaluation in that type, in
# another order of operations.
IMPORT_ROUNDING_FACTOR = 10.0


def check_import_agrees(network: Network, lower: np.ndarray, upper: np.ndarray, n_points: int = 16,
                        rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> None:
    """Refuse a network whose torch import disagrees with onnxruntime on points of the box.

    The tolerance is relative to the largest output magnitude, not to each output: onnxruntime
    computes in the model's float32, and an output near zero that comes from cancelling large
    terms (raw-scale inputs, e.g. feet) carries float32 rounding of the terms' size. For the same
    reason it also allows `IMPORT_ROUNDING_FACTOR` times the largest difference between our own
    import evaluated in float64 and in the model's element type (float32 for float16): a network whose intermediate
    values dwarf its outputs (a REASSURE patch's steep terms) loses digits to rounding in any
    float32 evaluation, while an import error moves both of our evaluations alike and is still
    refused."""
    import torch

    rng = np.random.default_rng(seed)
    points = lower + rng.random((n_points, lower.size)) * (upper - lower)
    points = np.vstack([points, lower, upper]).astype(network.input_dtype).astype(np.float64)
    expected = run_onnxruntime(network, points)
    rounding_type = np.float64 if network.input_dtype == np.float64 else np.float32
    with torch.no_grad():
        ours = network.forward(torch.from_numpy(points)).numpy()
        in_type = network.forward(torch.from_numpy(points.astype(rounding_type))).double().numpy()
    rounding = float(np.max(np.abs(ours - in_type), initial=0.0))
    allowed = atol + rtol * float(np.max(np.abs(expected), initial=0.0)) + IMPORT_ROUNDING_FACTOR * rounding
    if not np.all(np.abs(ours - expected) <= allowed):
        worst = float(np.max(np.abs(ours - expected)))
        raise InputError(network.path, "import check", f"torch import disagrees with onnxruntime (max |Δ| = {worst:.3g})")
