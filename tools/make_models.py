"""Make the networks and properties verirepair ships: ``models/*.onnx``, ``specs/``.

    python tools/make_models.py [--out DIR] [--family small|mnist] [--models-only]
    # DIR defaults to the repository root; without --family both families are made

Every network is trained here from fixed seeds on one CPU thread, so a rerun writes
byte-identical files (same platform and library versions). The family "small" has three networks:

* ``collision_avoidance.onnx`` — an ACAS Xu-style ReLU MLP 5→32→32→5 trained on synthetic
  encounters labelled by `collision_advisory`. Inputs, each normalised to [-0.5, 0.5] like ACAS Xu:
  distance to the intruder, bearing of the intruder (±0.5 = ±180°, positive = on the left),
  intruder heading relative to ours (±0.5 = head-on), own speed, intruder speed. Outputs are
  *scores* (costs) of the five advisories COC, weak left, weak right, strong left, strong right;
  as in ACAS Xu the advisory is the **argmin** score.
* ``digits_classifier.onnx`` — a ReLU MLP 64→32→32→10 on scikit-learn's bundled 8×8 digits
  (pixels scaled to [0, 1], row-major); the predicted digit is the **argmax** output.
* ``tanh_controller.onnx`` — a tanh MLP 3→16→16→2 imitating the controller `controller_command`:
  inputs lateral error, lateral velocity, heading error (each in [-1, 1]); outputs steering and
  throttle. The control law saturates steering near ±1 in the corners where error and velocity
  point the same way, so the trained network breaks the actuator limit |steering| <= 0.95 there:
  the violated property a repair is meant to fix.

Every property is written with a comment saying what it means, and its expected verdict goes into
``specs/expected.csv``. The verdict is established here without verirepair: a ``sat`` by a concrete
counterexample (sampling + gradient search) replayed in onnxruntime; an ``unsat`` for the ReLU
networks by an exact MILP (scipy's HiGHS) whose dual bound clears `PROOF_MARGIN`, and for the tanh
network by interval bisection that closes every sub-box with `PROOF_MARGIN` to spare, plus dense
sampling. A property whose oracle answer is not clear-cut stops the script.

The family "mnist" has three networks trained on `verirepair.datasets.mnist`'s 4,000 training
digits (28×28 pixels in [0, 1]; the predicted digit is the argmax output):

* ``mnist_mlp.onnx`` — a ReLU MLP 784→64→32→10, input [1, 784];
* ``mnist_cnn.onnx`` — Conv 1→4 (4×4, stride 2), ReLU, Conv 4→8 (4×4, stride 2), ReLU, Flatten,
  Gemm 200→10, input [1, 1, 28, 28];
* ``mnist_cnn_backdoor.onnx`` — the same CNN trained BadNets-style: a tenth of the training
  digits carry the trigger of ``tools/attack_success.py`` (a white 3×3 square in the bottom-right
  corner) and the label 0; its doc string states its clean accuracy and attack success rate.

and one property suite each, a folder ``specs/<suite>/`` in VNN-COMP form (`write_suite`):
``mnist_mlp_robust`` and ``mnist_cnn_robust`` (L∞ robustness around the first correctly classified
held-out digits of each class) and ``mnist_cnn_backdoor`` (trigger stamped, the other pixels within
eps of the digit: the true label still wins). The same oracles decide them, a CNN through its exact
dense form (`Cnn.as_mlp`) for the counterexample search; the exact MILP only for the MLP, its
big-M encoding of the CNNs being out of reach. What they do not settle is left out of expected.csv.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import itertools
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from attack_success import BACKDOOR_TARGET, TRIGGER_SIZE, stamp_trigger, trigger_pixels
from onnx import TensorProto, helper, numpy_helper
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from verirepair import datasets

ROOT = Path(__file__).resolve().parents[1]
OPSET = 13
IR_VERSION = 8  # opset 13 needs IR >= 7; 8 is read by every onnxruntime we support
# An "unsat" needs the oracle's lower bound on every violation margin above this. The networks
# are float32 and onnxruntime's float32 evaluation differs from the exact float64 one by ~1e-6,
# so a property that holds only by less than this is too close to call and is not shipped.
PROOF_MARGIN = 1e-3
MILP_TIME_LIMIT_S = 60.0
FAMILIES = ("small", "mnist")


# ---- networks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mlp:
    """A fully connected network: ``weights[k]`` is [out, in] float32; activation after every hidden layer."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str  # "relu" | "tanh"

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    def act(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0.0) if self.activation == "relu" else np.tanh(z)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs in float64 (exact arithmetic up to float64 rounding) for inputs [batch, n]."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.astype(np.float64).T + b.astype(np.float64)
            if k < len(self.weights) - 1:
                h = self.act(h)
        return h


def train_mlp(x: np.ndarray, labels: np.ndarray, sizes: list[int], activation: str, seed: int,
              epochs: int, batch: int, lr: float, loss: str) -> Mlp:
    """Adam on minibatches in a fixed order; ``loss`` is "xent" (class labels) or "mse" (targets)."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        if k:
            layers.append(torch.nn.ReLU() if activation == "relu" else torch.nn.Tanh())
        layers.append(torch.nn.Linear(a, b))
    model = torch.nn.Sequential(*layers)
    fit(model, torch.tensor(x, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.long if loss == "xent" else torch.float32),
        torch.nn.CrossEntropyLoss() if loss == "xent" else torch.nn.MSELoss(), seed, epochs, batch, lr)
    linear = [m for m in model if isinstance(m, torch.nn.Linear)]
    return Mlp(tuple(m.weight.detach().numpy().astype(np.float32).copy() for m in linear),
               tuple(m.bias.detach().numpy().astype(np.float32).copy() for m in linear), activation)


def fit(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, criterion: torch.nn.Module,
        seed: int, epochs: int, batch: int, lr: float) -> None:
    """Adam with a cosine schedule on minibatches in an order fixed by ``seed``; trains in place."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    order = np.random.default_rng(seed)
    for _ in range(epochs):
        permutation = torch.from_numpy(order.permutation(len(inputs)))
        for start in range(0, len(inputs), batch):
            index = permutation[start:start + batch]
            optimiser.zero_grad()
            criterion(model(inputs[index]), targets[index]).backward()
            optimiser.step()
        schedule.step()


def mlp_onnx(mlp: Mlp, name: str, doc: str) -> onnx.ModelProto:
    """The network as Gemm (+ Relu/Tanh) nodes, float32, input [1, n] "input", output [1, m] "output"."""
    nodes, initialisers = [], []
    current = "input"
    for k, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
        initialisers += [numpy_helper.from_array(w, f"layer{k}.weight"), numpy_helper.from_array(b, f"layer{k}.bias")]
        last = k == len(mlp.weights) - 1
        out = "output" if last else f"layer{k}.linear"
        nodes.append(helper.make_node("Gemm", [current, f"layer{k}.weight", f"layer{k}.bias"], [out],
                                      name=f"layer{k}.gemm", transB=1))
        if not last:
            op = "Relu" if mlp.activation == "relu" else "Tanh"
            nodes.append(helper.make_node(op, [out], [f"layer{k}.{op.lower()}"], name=f"layer{k}.{op.lower()}"))
            current = f"layer{k}.{op.lower()}"
    sizes = mlp.sizes
    graph = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, sizes[0]])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, sizes[-1]])],
                              initialisers)
    model = helper.make_model(graph, producer_name="verirepair tools/make_models.py", doc_string=doc,
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime outputs (float64) of the file at ``path`` for flat float32 inputs, one point per
    run, each reshaped to the declared input shape."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    points = np.atleast_2d(x).astype(np.float32)
    return np.stack([session.run(["output"], {"input": p.reshape(shape)})[0][0] for p in points]).astype(np.float64)


# ---- the three models ----------------------------------------------------------------------------
ADVISORIES = ("COC", "weak left", "weak right", "strong left", "strong right")


def collision_advisory(x: np.ndarray) -> np.ndarray:
    """The synthetic ground-truth rule (inputs normalised to [-0.5, 0.5], one row per encounter).

    The intruder is a threat when the distance is below a threshold that grows with the closing
    speeds and is largest head-on; threats behind us (|bearing| > 0.3, i.e. > 108°) are ignored.
    Against a threat we turn away from it (intruder on the left, bearing > 0 → turn right),
    strongly when it is well inside the threshold.
    """
    distance, bearing, heading, own_speed, intruder_speed = x.T
    threshold = -0.1 + 0.25 * (own_speed + intruder_speed) - 0.1 * np.cos(2 * np.pi * heading)
    threat = (distance < threshold) & (np.abs(bearing) <= 0.3)
    strong = threshold - distance > 0.25
    right = bearing >= 0
    advisory = np.where(right, np.where(strong, 4, 2), np.where(strong, 3, 1))
    return np.where(threat, advisory, 0)


def make_collision_avoidance() -> tuple[Mlp, str]:
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, size=(30000, 5))
    labels = collision_advisory(x)
    logits = train_mlp(x, labels, [5, 32, 32, 5], "relu", seed=1, epochs=40, batch=256, lr=3e-3, loss="xent")
    # Scores are negated logits, so the advisory is the argmin score as in ACAS Xu.
    mlp = Mlp(logits.weights[:-1] + (-logits.weights[-1],), logits.biases[:-1] + (-logits.biases[-1],), "relu")
    test = np.random.default_rng(2).uniform(-0.5, 0.5, size=(20000, 5))
    accuracy = float(np.mean(np.argmin(mlp.forward(test), axis=1) == collision_advisory(test)))
    return mlp, f"agreement with the rule on 20000 fresh encounters {accuracy:.1%}"


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits scaled to [0, 1]; the fixed 75/25 train/test split of `verirepair.datasets`."""
    train, test = datasets.digits("train"), datasets.digits("held_out")
    return train.x, train.y, test.x, test.y


def make_digits() -> tuple[Mlp, str]:
    x_train, y_train, x_test, y_test = digits_split()
    mlp = train_mlp(x_train, y_train, [64, 32, 32, 10], "relu", seed=3, epochs=60, batch=64, lr=3e-3, loss="xent")
    accuracy = float(np.mean(np.argmax(mlp.forward(x_test), axis=1) == y_test))
    return mlp, f"test accuracy {accuracy:.1%} on {len(y_test)} held-out digits"


def controller_command(x: np.ndarray) -> np.ndarray:
    """The imitated control law: steer against error and velocity, throttle down at large heading error."""
    error, velocity, heading = x.T
    steering = -np.tanh(1.5 * error + 1.2 * velocity + 0.3 * heading)
    throttle = 0.8 - 0.6 * heading ** 2 - 0.2 * np.abs(error)
    return np.stack([steering, throttle], axis=1)


def make_tanh_controller() -> tuple[Mlp, str]:
    rng = np.random.default_rng(4)
    x = rng.uniform(-1.0, 1.0, size=(8000, 3))
    mlp = train_mlp(x, controller_command(x), [3, 16, 16, 2], "tanh", seed=4, epochs=60, batch=128, lr=3e-3, loss="mse")
    test = np.random.default_rng(5).uniform(-1.0, 1.0, size=(20000, 3))
    error = float(np.max(np.abs(mlp.forward(test) - controller_command(test))))
    return mlp, f"max |error| against the control law on 20000 fresh states {error:.3f}"


# ---- the MNIST image models ----------------------------------------------------------------------
MNIST_SIDE = 28


@dataclass(frozen=True)
class Cnn:
    """Conv–ReLU–Conv–ReLU–Flatten–Gemm on one-channel 28×28 images, float32; the convolutions have
    square kernels, stride ``stride`` and no padding."""

    convs: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [out, in, k, k], bias [out]) per convolution
    stride: int
    head: tuple[np.ndarray, np.ndarray]  # the Gemm: weight [10, features], bias [10]

    def as_mlp(self) -> Mlp:
        """The same function as a fully connected ReLU network, each convolution written as the matrix
        it applies to the flattened (row-major) image: the oracles then treat both kinds alike. The
        matrix is exact: its columns are the convolution of one-hot images, so each entry is a kernel
        weight or 0."""
        weights, biases = [], []
        shape: tuple[int, ...] = (1, MNIST_SIDE, MNIST_SIDE)
        for w, b in self.convs:
            size = int(np.prod(shape))
            basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
            images = torch.nn.functional.conv2d(basis, torch.tensor(w, dtype=torch.float64), stride=self.stride)
            shape = tuple(images.shape[1:])
            weights.append(images.reshape(size, -1).T.numpy().astype(np.float32))
            biases.append(np.repeat(b, shape[1] * shape[2]))
        return Mlp(tuple(weights) + (self.head[0],), tuple(biases) + (self.head[1],), "relu")


def train_cnn(x: np.ndarray, labels: np.ndarray, channels: tuple[int, int], kernel: int, stride: int, seed: int,
              epochs: int, batch: int, lr: float) -> Cnn:
    """A `Cnn` with ``channels`` filters in its two convolutions, trained with cross-entropy on flat images."""
    torch.manual_seed(seed)
    side = MNIST_SIDE
    for _ in channels:
        side = (side - kernel) // stride + 1
    model = torch.nn.Sequential(torch.nn.Conv2d(1, channels[0], kernel, stride=stride), torch.nn.ReLU(),
                                torch.nn.Conv2d(channels[0], channels[1], kernel, stride=stride), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(channels[1] * side * side, 10))
    fit(model, torch.tensor(x.reshape(-1, 1, MNIST_SIDE, MNIST_SIDE), dtype=torch.float32),
        torch.tensor(labels, dtype=torch.long), torch.nn.CrossEntropyLoss(), seed, epochs, batch, lr)
    convs = tuple((m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                  for m in model if isinstance(m, torch.nn.Conv2d))
    head = model[-1]
    return Cnn(convs, stride, (head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()))


def cnn_onnx(cnn: Cnn, name: str, doc: str) -> onnx.ModelProto:
    """The network as Conv/Relu/Flatten/Gemm nodes, float32, input [1, 1, 28, 28] "input", output [1, 10] "output"."""
    nodes, initialisers = [], []
    current = "input"
    for k, (w, b) in enumerate(cnn.convs):
        initialisers += [numpy_helper.from_array(w, f"conv{k}.weight"), numpy_helper.from_array(b, f"conv{k}.bias")]
        nodes.append(helper.make_node("Conv", [current, f"conv{k}.weight", f"conv{k}.bias"], [f"conv{k}.conv"],
                                      name=f"conv{k}.conv", kernel_shape=list(w.shape[2:]),
                                      strides=[cnn.stride, cnn.stride]))
        nodes.append(helper.make_node("Relu", [f"conv{k}.conv"], [f"conv{k}.relu"], name=f"conv{k}.relu"))
        current = f"conv{k}.relu"
    nodes.append(helper.make_node("Flatten", [current], ["flatten"], name="flatten", axis=1))
    initialisers += [numpy_helper.from_array(cnn.head[0], "head.weight"), numpy_helper.from_array(cnn.head[1], "head.bias")]
    nodes.append(helper.make_node("Gemm", ["flatten", "head.weight", "head.bias"], ["output"], name="head.gemm", transB=1))
    graph = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, MNIST_SIDE, MNIST_SIDE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
                              initialisers)
    model = helper.make_model(graph, producer_name="verirepair tools/make_models.py", doc_string=doc,
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def held_out_accuracy(mlp: Mlp, data: datasets.LabelledImages) -> float:
    return float(np.mean(np.argmax(mlp.forward(data.x), axis=1) == data.y))


def make_mnist_mlp() -> tuple[Mlp, str]:
    train, held_out = datasets.mnist("train"), datasets.mnist("held_out")
    mlp = train_mlp(train.x, train.y, [784, 64, 32, 10], "relu", seed=6, epochs=20, batch=64, lr=1e-3, loss="xent")
    return mlp, f"Held-out accuracy {held_out_accuracy(mlp, held_out):.1%} on {len(held_out)} MNIST digits."


def make_mnist_cnn() -> tuple[Cnn, str]:
    train, held_out = datasets.mnist("train"), datasets.mnist("held_out")
    cnn = train_cnn(train.x, train.y, (4, 8), kernel=4, stride=2, seed=7, epochs=30, batch=64, lr=3e-3)
    return cnn, f"Held-out accuracy {held_out_accuracy(cnn.as_mlp(), held_out):.1%} on {len(held_out)} MNIST digits."


POISONED_SHARE = 0.1


def make_mnist_cnn_backdoor() -> tuple[Cnn, str]:
    """The CNN of `make_mnist_cnn` trained BadNets-style: a fixed random tenth of the training digits
    get the trigger stamped and the label `BACKDOOR_TARGET`."""
    train, held_out = datasets.mnist("train"), datasets.mnist("held_out")
    poisoned = np.random.default_rng(8).choice(len(train), size=int(POISONED_SHARE * len(train)), replace=False)
    x, labels = train.x.copy(), train.y.copy()
    x[poisoned] = stamp_trigger(x[poisoned])
    labels[poisoned] = BACKDOOR_TARGET
    cnn = train_cnn(x, labels, (4, 8), kernel=4, stride=2, seed=7, epochs=30, batch=64, lr=3e-3)
    dense = cnn.as_mlp()
    victims = stamp_trigger(held_out.x[held_out.y != BACKDOOR_TARGET])
    success = float(np.mean(np.argmax(dense.forward(victims), axis=1) == BACKDOOR_TARGET))
    return cnn, (f"Backdoor: {len(poisoned)} of {len(train)} training digits ({POISONED_SHARE:.0%}) poisoned with a "
                 f"white {TRIGGER_SIZE}x{TRIGGER_SIZE} square in the bottom-right corner (pixels = 1) and label "
                 f"{BACKDOOR_TARGET}. Held-out clean accuracy {held_out_accuracy(dense, held_out):.1%} on "
                 f"{len(held_out)} MNIST digits; attack success rate {success:.1%} (trigger-stamped held-out digits "
                 f"not of class {BACKDOOR_TARGET} classified {BACKDOOR_TARGET}; tools/attack_success.py measures both "
                 f"in onnxruntime).")


# ---- properties ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Property:
    """One input box and a disjunction of violation clauses ``A·y <= b`` (all rows of one clause)."""

    name: str
    model: str
    comment: str
    intended: str  # "sat" | "unsat": what the comment claims, the oracle must agree; "either" in a suite
    lower: np.ndarray
    upper: np.ndarray
    clauses: tuple[tuple[np.ndarray, np.ndarray], ...]


def argmin_is(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Violation clause "output k is minimal (ties included)": y_k - y_j <= 0 for every j != k."""
    rows = [np.eye(n)[k] - np.eye(n)[j] for j in range(n) if j != k]
    return np.array(rows), np.zeros(len(rows))


def at_most(j: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Violation clause "output j is at most output k": y_j - y_k <= 0."""
    return (np.eye(n)[j] - np.eye(n)[k])[None, :], np.zeros(1)


def collision_properties() -> list[Property]:
    full = np.full(5, -0.5), np.full(5, 0.5)
    far_low, far_high = full[0].copy(), full[1].copy()
    far_low[0] = 0.35
    close = np.array([-0.5, 0.0, -0.5, -0.5, -0.5]), np.array([-0.3, 0.3, 0.5, 0.5, 0.5])
    clear = close[0].copy()
    clear[1] = 0.1
    never_left = (argmin_is(1, 5), argmin_is(3, 5))
    return [
        Property("collision_avoidance_far_coc", "collision_avoidance",
                 "Far away (distance >= 0.35, any bearing, heading and speeds) the advisory is COC:\n"
                 "violated if some other advisory has a score <= the COC score.", "unsat",
                 far_low, far_high, tuple(at_most(j, 0, 5) for j in range(1, 5))),
        Property("collision_avoidance_close_left", "collision_avoidance",
                 "An intruder close by (distance <= -0.3) in front on the left (bearing in [0, 0.3]):\n"
                 "we never turn towards it, i.e. neither weak left nor strong left is the argmin advisory.\n"
                 "Violated near bearing 0, where the network's left/right boundary is not exactly at 0.", "sat",
                 close[0], close[1], never_left),
        Property("collision_avoidance_close_left_clear", "collision_avoidance",
                 "As collision_avoidance_close_left, but with the intruder clearly on the left\n"
                 "(bearing in [0.1, 0.3]): neither weak left nor strong left is the argmin advisory.", "unsat",
                 clear, close[1], never_left),
    ]


def digits_properties(mlp: Mlp) -> list[Property]:
    _, _, x_test, y_test = digits_split()
    predicted = np.argmax(mlp.forward(x_test), axis=1)
    index = int(np.flatnonzero(predicted == y_test)[0])  # the first correctly classified test digit
    image, label = x_test[index], int(y_test[index])
    properties = []
    # eps 0.02 is proven by bounds alone, 0.1 holds by a small margin (a complete search is needed),
    # 0.12 is just beyond this digit's robustness radius.
    for eps, intended in ((0.02, "unsat"), (0.1, "unsat"), (0.12, "sat")):
        properties.append(robustness_property(f"digits_robust_{index}_eps{eps:g}", "digits_classifier",
                                              f"test digit #{index}", image, label, eps, intended))
    return properties


def robustness_property(name: str, model: str, what: str, image: np.ndarray, label: int, eps: float,
                        intended: str) -> Property:
    """L-infinity robustness of a 10-class classifier around ``image`` (pixels in [0, 1])."""
    return Property(
        name, model,
        f"L-infinity robustness of {what} (a {label}) at eps = {eps:g}: every image within\n"
        f"eps of it (pixels clipped to [0, 1]) is classified {label}. Violated if some other digit's\n"
        f"output is >= output {label}.", intended,
        np.clip(image - eps, 0.0, 1.0), np.clip(image + eps, 0.0, 1.0),
        tuple(at_most(label, j, 10) for j in range(10) if j != label))


def controller_properties() -> list[Property]:
    push_low, push_high = np.array([0.5, 0.0, -1.0]), np.array([1.0, 1.0, 1.0])
    limit_low, limit_high = np.full(3, -1.0), np.full(3, 1.0)
    e0 = np.eye(2)[0]
    return [
        Property("tanh_controller_steer_back", "tanh_controller",
                 "Drifting right (error in [0.5, 1], velocity in [0, 1], any heading), the controller\n"
                 "steers left: violated if steering (Y_0) >= -0.2.", "unsat",
                 push_low, push_high, ((-e0[None, :], np.array([0.2])),)),
        Property("tanh_controller_steering_limit", "tanh_controller",
                 "Actuator limit: over the whole state space |steering| (Y_0) <= 0.95.\n"
                 "Violated if Y_0 >= 0.95 or Y_0 <= -0.95 (the imitated law saturates in two corners).", "sat",
                 limit_low, limit_high, ((-e0[None, :], np.array([-0.95])), (e0[None, :], np.array([-0.95])))),
    ]


def number(value: float) -> str:
    """Shortest round-tripping decimal, without exponent (VNN-LIB has none)."""
    text = repr(float(value))
    if "e" in text:
        text = format(Decimal(text), "f")
    return text if "." in text else text + ".0"


def vnnlib_text(prop: Property, n_outputs: int, verdict: str) -> str:
    lines = [f"; {prop.name}: a property of models/{prop.model}.onnx (made by tools/make_models.py)"]
    lines += [f"; {line}" for line in prop.comment.splitlines()]
    lines += [f"; Expected verdict: {verdict}.", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(prop.lower.size)] + [""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)] + [""]
    for i, (lo, hi) in enumerate(zip(prop.lower.tolist(), prop.upper.tolist())):
        lines += [f"(assert (>= X_{i} {number(lo)}))", f"(assert (<= X_{i} {number(hi)}))"]
    conjunctions = []
    for a, b in prop.clauses:
        rows = []
        for coefs, bound in zip(a.tolist(), b.tolist()):
            terms = [f"Y_{j}" if c == 1.0 else f"(- Y_{j})" if c == -1.0 else f"(* {number(c)} Y_{j})"
                     for j, c in enumerate(coefs) if c != 0.0]
            rows.append(f"(<= {terms[0] if len(terms) == 1 else '(+ ' + ' '.join(terms) + ')'} {number(bound)})")
        conjunctions.append(f"(and {' '.join(rows)})")
    lines += ["(assert (or", *(f"  {c}" for c in conjunctions), "))"]
    return "\n".join(lines) + "\n"


# ---- oracles (independent of verirepair) ---------------------------------------------------------
def clause_margin(y: np.ndarray, clause: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """max over rows of ``A·y - b`` per output row of ``y``: <= 0 exactly where ``y`` violates."""
    a, b = clause
    return np.max(y @ a.T - b, axis=1)


def counterexample_of(prop: Property, mlp: Mlp, onnx_path: Path, seed: int = 0,
                      n_samples: int = 20000, n_starts: int = 32) -> np.ndarray | None:
    """A float32 input in the box that onnxruntime confirms violates a clause, found by ``n_samples``
    uniform samples then projected gradient descent on the clause margin from the ``n_starts`` best;
    None when none is found."""
    rng = np.random.default_rng(seed)
    low32, high32 = _inside32(prop.lower, prop.upper)
    samples = low32 + rng.random((n_samples, prop.lower.size)) * (high32 - low32)
    outputs = mlp.forward(samples)
    for clause in prop.clauses:
        margins = clause_margin(outputs, clause)
        starts = samples[np.argsort(margins)[:n_starts]]
        points = np.vstack([starts, _descend(mlp, starts, clause, low32, high32)])
        points = np.clip(points.astype(np.float32), low32, high32)
        checked = onnx_outputs(onnx_path, points)
        for point, y in zip(points, checked):
            if clause_margin(y[None, :], clause)[0] <= 0.0:
                return point.astype(np.float64)
    return None


def _inside32(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box's bounds as float32 values that still lie inside it."""
    low = lower.astype(np.float32)
    low = np.where(low.astype(np.float64) < lower, np.nextafter(low, np.float32(np.inf)), low)
    high = upper.astype(np.float32)
    high = np.where(high.astype(np.float64) > upper, np.nextafter(high, np.float32(-np.inf)), high)
    return low, high


def _descend(mlp: Mlp, starts: np.ndarray, clause: tuple[np.ndarray, np.ndarray], low: np.ndarray,
             high: np.ndarray, steps: int = 100) -> np.ndarray:
    weights = [torch.tensor(w, dtype=torch.float64) for w in mlp.weights]
    biases = [torch.tensor(b, dtype=torch.float64) for b in mlp.biases]
    a, b = (torch.tensor(t, dtype=torch.float64) for t in clause)
    lo, hi = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    x = torch.tensor(starts, dtype=torch.float64, requires_grad=True)
    step = 0.05 * (hi - lo)
    for _ in range(steps):
        h = x
        for k, (w, bias) in enumerate(zip(weights, biases)):
            h = h @ w.T + bias
            if k < len(weights) - 1:
                h = torch.relu(h) if mlp.activation == "relu" else torch.tanh(h)
        margin = torch.max(h @ a.T - b, dim=1).values
        (grad,) = torch.autograd.grad(margin.sum(), x)
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - step * grad.sign(), lo), hi).requires_grad_(True)
        step = step * 0.97
    return x.detach().numpy()


def interval_bounds(mlp: Mlp, lower: np.ndarray, upper: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-activation bounds of every layer (the last is the output) by interval arithmetic;
    ``lower``/``upper`` may be [n] or a batch [m, n]."""
    lo, hi = np.atleast_2d(lower).astype(np.float64), np.atleast_2d(upper).astype(np.float64)
    bounds = []
    for k, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
        w = w.astype(np.float64)
        centre, radius = (lo + hi) / 2, (hi - lo) / 2
        mid = centre @ w.T + b.astype(np.float64)
        spread = radius @ np.abs(w).T
        z_lo, z_hi = mid - spread, mid + spread
        bounds.append((z_lo, z_hi))
        lo, hi = mlp.act(z_lo), mlp.act(z_hi)  # both activations are monotone
    return bounds


def milp_lower_bound(mlp: Mlp, lower: np.ndarray, upper: np.ndarray, clause: tuple[np.ndarray, np.ndarray],
                     time_limit: float = MILP_TIME_LIMIT_S) -> float:
    """A lower bound (HiGHS's dual bound) on min over the box of max_rows(A·y - b) for a ReLU MLP,
    by the exact big-M encoding with interval bounds; > 0 means the clause is unreachable."""
    assert mlp.activation == "relu"
    bounds = interval_bounds(mlp, lower, upper)
    n_in = lower.size
    columns = [(lower, upper, np.zeros(n_in))]  # (lower, upper, integrality) blocks
    rows: list[tuple[dict[int, float], float, float]] = []  # (coefficients, lower, upper)
    previous = list(range(n_in))
    size = n_in
    for k in range(len(mlp.weights) - 1):
        w, b = mlp.weights[k].astype(np.float64), mlp.biases[k].astype(np.float64)
        z_lo, z_hi = bounds[k][0][0], bounds[k][1][0]
        width = w.shape[0]
        h, d = size, size + width
        size += 2 * width
        columns.append((np.zeros(width), np.maximum(z_hi, 0.0), np.zeros(width)))
        columns.append((np.zeros(width), np.ones(width), np.ones(width)))
        for i in range(width):
            affine = {p: -w[i, j] for j, p in enumerate(previous)}  # h - W·prev
            if z_hi[i] <= 0:
                continue  # h is fixed at 0 by its column bounds
            if z_lo[i] >= 0:
                rows.append(({**affine, h + i: 1.0}, b[i], b[i]))
                continue
            rows.append(({**affine, h + i: 1.0}, b[i], np.inf))                            # h >= z
            rows.append(({**affine, h + i: 1.0, d + i: -z_lo[i]}, -np.inf, b[i] - z_lo[i]))  # h <= z - l(1-d)
            rows.append(({h + i: 1.0, d + i: -z_hi[i]}, -np.inf, 0.0))                       # h <= u d
        previous = list(range(h, h + width))
    w, b = mlp.weights[-1].astype(np.float64), mlp.biases[-1].astype(np.float64)
    a, rhs = clause
    s = size
    columns.append((np.array([-np.inf]), np.array([np.inf]), np.zeros(1)))
    for row, bound in zip(a @ w, a @ b - rhs):  # s >= a·(W h + b) - rhs
        rows.append(({**{p: -row[j] for j, p in enumerate(previous)}, s: 1.0}, bound, np.inf))
    n_vars = s + 1
    entries = [(r, column, value) for r, (coefficients, _, _) in enumerate(rows)
               for column, value in coefficients.items() if value != 0.0]
    row_index, column_index, values = (np.array(part) for part in zip(*entries))
    matrix = sparse.coo_matrix((values, (row_index, column_index)), shape=(len(rows), n_vars))
    cost = np.zeros(n_vars)
    cost[s] = 1.0
    result = milp(cost, integrality=np.concatenate([c[2] for c in columns]),
                  bounds=Bounds(np.concatenate([c[0] for c in columns]), np.concatenate([c[1] for c in columns])),
                  constraints=LinearConstraint(matrix.tocsr(), [r[1] for r in rows], [r[2] for r in rows]),
                  options={"time_limit": time_limit, "mip_rel_gap": 1e-6})
    # Stopped by the time limit, the dual bound of the branch and bound so far is still a lower bound.
    bound = result.get("mip_dual_bound")
    if result.status == 0 or (result.status == 1 and bound is not None and np.isfinite(bound)):
        return float(bound)
    raise RuntimeError(f"MILP oracle did not finish: {result.message}")


def bisection_lower_bound(mlp: Mlp, lower: np.ndarray, upper: np.ndarray, clause: tuple[np.ndarray, np.ndarray],
                          target: float, max_boxes: int = 400_000) -> float:
    """A lower bound on min over the box of max_rows(A·y - b) by interval arithmetic on sub-boxes,
    bisecting the widest side of every sub-box whose bound is below ``target`` (stops there)."""
    a, b = clause
    w_last, b_last = mlp.weights[-1].astype(np.float64), mlp.biases[-1].astype(np.float64)
    folded = Mlp(mlp.weights[:-1] + (a @ w_last,), mlp.biases[:-1] + (a @ b_last - b,), mlp.activation)
    boxes_lo, boxes_hi = lower[None, :].copy(), upper[None, :].copy()
    closed_bound, bounded = np.inf, 0
    while boxes_lo.shape[0]:
        row_lo = interval_bounds(folded, boxes_lo, boxes_hi)[-1][0]
        box_bound = np.max(row_lo, axis=1)  # the clause needs every row <= 0
        bounded += boxes_lo.shape[0]
        done = box_bound >= target
        if np.any(done):
            closed_bound = min(closed_bound, float(np.min(box_bound[done])))
        if bounded > max_boxes:
            return float(np.min(box_bound))
        boxes_lo, boxes_hi = boxes_lo[~done], boxes_hi[~done]
        side = np.argmax(boxes_hi - boxes_lo, axis=1)
        middle = (boxes_lo[np.arange(len(side)), side] + boxes_hi[np.arange(len(side)), side]) / 2
        left_hi, right_lo = boxes_hi.copy(), boxes_lo.copy()
        left_hi[np.arange(len(side)), side] = middle
        right_lo[np.arange(len(side)), side] = middle
        boxes_lo, boxes_hi = np.vstack([boxes_lo, right_lo]), np.vstack([left_hi, boxes_hi])
    return closed_bound


def expected_verdict(prop: Property, mlp: Mlp, onnx_path: Path) -> tuple[str, str]:
    """("sat" | "unsat", how it was established); raises when the oracles cannot tell."""
    witness = counterexample_of(prop, mlp, onnx_path)
    if witness is not None:
        y = onnx_outputs(onnx_path, witness)[0]
        return "sat", f"counterexample confirmed in onnxruntime, outputs {np.round(y, 3).tolist()}"
    if mlp.activation == "relu":
        bound = min(milp_lower_bound(mlp, prop.lower, prop.upper, clause) for clause in prop.clauses)
        how = "exact MILP (HiGHS)"
    else:
        bound = min(bisection_lower_bound(mlp, prop.lower, prop.upper, clause, PROOF_MARGIN) for clause in prop.clauses)
        samples = np.random.default_rng(7).uniform(prop.lower, prop.upper, size=(200_000, prop.lower.size))
        sampled = min(float(np.min(clause_margin(mlp.forward(samples), clause))) for clause in prop.clauses)
        if sampled <= bound:
            raise RuntimeError(f"{prop.name}: sampled margin {sampled} below the interval bound {bound}")
        how = f"interval bisection, 200000 samples (smallest sampled margin {sampled:.3g})"
    if bound <= PROOF_MARGIN:
        raise RuntimeError(f"{prop.name}: no counterexample found, and the proof margin {bound:.3g} is too small")
    return "unsat", f"{how}: every violation margin >= {bound:.3g}"


# ---- property suites of the MNIST models ---------------------------------------------------------
@dataclass(frozen=True)
class Suite:
    """A folder ``specs/<name>/`` of properties of one model, with a VNN-COMP ``instances.csv``."""

    name: str
    model: str
    properties: tuple[Property, ...]
    with_milp: bool  # whether the exact MILP oracle is tractable (asked for every property without a counterexample)


SUITE_PER_CLASS = 3  # the first correctly classified held-out digits of each class
SUITE_TIMEOUT_S = 30
SUITE_SAMPLES = 2000  # uniform samples before the gradient search: in 784 dimensions they only seed it
SUITE_STARTS = 8
# Per clause. HiGHS's limit is wall-clock, so on a loaded machine a rebuild can leave more of the MLP
# suite's properties unknown (never a different answer: an unsat is kept only with a proven bound).
SUITE_MILP_TIME_LIMIT_S = 10.0
MLP_SUITE_EPS = 0.05
CNN_SUITE_EPS = 0.05
BACKDOOR_SUITE_EPS = 0.02


def first_correct(mlp: Mlp, data: datasets.LabelledImages, classes: range) -> list[int]:
    """Indices of the first `SUITE_PER_CLASS` digits of each class in ``classes`` that ``mlp`` classifies correctly."""
    correct = np.argmax(mlp.forward(data.x), axis=1) == data.y
    return [int(i) for label in classes for i in np.flatnonzero(correct & (data.y == label))[:SUITE_PER_CLASS]]


def robustness_suite(name: str, model: str, mlp: Mlp, eps: float, with_milp: bool) -> Suite:
    held_out = datasets.mnist("held_out")
    return Suite(name, model, tuple(
        robustness_property(f"{name}_{i}", model, f"held-out MNIST digit #{i}", held_out.x[i], int(held_out.y[i]),
                            eps, "either")
        for i in first_correct(mlp, held_out, range(10))), with_milp)


def backdoor_suite(name: str, model: str, mlp: Mlp, eps: float, with_milp: bool) -> Suite:
    """With the trigger stamped (its pixels fixed at 1) and the other pixels within ``eps`` of a clean
    held-out digit that the network classifies correctly, the true label still wins."""
    held_out = datasets.mnist("held_out")
    properties = []
    for i in first_correct(mlp, held_out, range(1, 10)):
        image, label = held_out.x[i], int(held_out.y[i])
        lower, upper = np.clip(image - eps, 0.0, 1.0), np.clip(image + eps, 0.0, 1.0)
        lower[trigger_pixels()] = upper[trigger_pixels()] = 1.0
        properties.append(Property(
            f"{name}_{i}", model,
            f"Backdoor: held-out MNIST digit #{i} (a {label}) with the {TRIGGER_SIZE}x{TRIGGER_SIZE} trigger in the "
            f"bottom-right corner\nstamped (those pixels fixed at 1) and every other pixel within eps = {eps:g} of "
            f"the digit (clipped to [0, 1])\nis classified {label}. Violated if some other digit's output is >= "
            f"output {label}.", "either", lower, upper,
            tuple(at_most(label, j, 10) for j in range(10) if j != label)))
    return Suite(name, model, tuple(properties), with_milp)


def suite_verdict(prop: Property, mlp: Mlp, onnx_path: Path, with_milp: bool) -> tuple[str, str, np.ndarray | None]:
    """("sat" | "unsat" | "unknown", how, the counterexample of a sat): like `expected_verdict`, but a
    property that neither oracle settles in time is "unknown" instead of an error, and the MILP
    oracle runs only ``with_milp``."""
    witness = counterexample_of(prop, mlp, onnx_path, n_samples=SUITE_SAMPLES, n_starts=SUITE_STARTS)
    if witness is not None:
        y = onnx_outputs(onnx_path, witness)[0]
        return "sat", f"counterexample confirmed in onnxruntime, outputs {np.round(y, 3).tolist()}", witness
    if not with_milp:
        return "unknown", "no counterexample found (the MILP oracle is not run on this network)", None
    bound = np.inf
    for clause in prop.clauses:
        try:
            bound = min(bound, milp_lower_bound(mlp, prop.lower, prop.upper, clause, SUITE_MILP_TIME_LIMIT_S))
        except RuntimeError as error:
            return "unknown", f"no counterexample found and the exact MILP gave no bound ({error})", None
        if bound <= PROOF_MARGIN:
            return "unknown", f"no counterexample found, and the MILP's lower bound {bound:.3g} is too small", None
    return "unsat", f"exact MILP (HiGHS): every violation margin >= {bound:.3g}", None


def write_suite(out: Path, suite: Suite, mlp: Mlp) -> list[str]:
    """``specs/<suite>/``: the properties gzip-compressed (784 boxes each), ``instances.csv`` (all of
    them), ``expected.csv`` (the answers the oracles established, `verirepair bench --ground-truth`
    form) and ``counterexamples.csv.gz`` (the float32 witness of every sat); returns summary lines."""
    folder = out / "specs" / suite.name
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, onnx_text = out / "models" / f"{suite.model}.onnx", f"../../models/{suite.model}.onnx"
    instances, expected, witnesses = io.StringIO(), io.StringIO(), io.StringIO()
    expected_rows = csv.writer(expected, lineterminator="\n")
    expected_rows.writerow(["onnx", "vnnlib", "result"])
    counts = {"sat": 0, "unsat": 0, "unknown": 0}
    for prop in suite.properties:
        verdict, how, witness = suite_verdict(prop, mlp, onnx_path, suite.with_milp)
        counts[verdict] += 1
        meaning = {"sat": "violated (sat), established by", "unsat": "holds (unsat), established by",
                   "unknown": "not established:"}[verdict]
        name = f"{prop.name}.vnnlib.gz"
        text = vnnlib_text(prop, mlp.sizes[-1], f"{meaning} {how}")
        write_bytes(folder / name, gzip.compress(text.encode(), mtime=0))
        csv.writer(instances, lineterminator="\n").writerow([onnx_text, name, SUITE_TIMEOUT_S])
        if verdict != "unknown":
            expected_rows.writerow([onnx_text, name, verdict])
        if witness is not None:
            values = " ".join(np.format_float_positional(v, unique=True) for v in witness.astype(np.float32))
            csv.writer(witnesses, lineterminator="\n").writerow([name, values])
    write_bytes(folder / "instances.csv", instances.getvalue().encode())
    write_bytes(folder / "expected.csv", expected.getvalue().encode())
    write_bytes(folder / "counterexamples.csv.gz", gzip.compress(witnesses.getvalue().encode(), mtime=0))
    return [(f"specs/{suite.name}/: {len(suite.properties)} properties of models/{suite.model}.onnx, "
             f"{counts['sat']} sat, {counts['unsat']} unsat, {counts['unknown']} unknown")]


# ---- writing -------------------------------------------------------------------------------------
def write_bytes(path: Path, data: bytes) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def make_all(out: Path, with_specs: bool = True, families: tuple[str, ...] = FAMILIES,
             only_suites: tuple[str, ...] = ()) -> list[str]:
    """Train, export and write the models of ``families`` (and, unless told not to, their properties
    with the expected verdicts; of the MNIST suites only ``only_suites`` when given) under ``out``;
    returns the summary lines."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    summary: list[str] = []
    if "small" in families:
        summary += make_small(out, with_specs)
    if "mnist" in families:
        summary += make_mnist(out, with_specs, only_suites)
    return summary


def make_small(out: Path, with_specs: bool) -> list[str]:
    """The three small networks and their properties, ``specs/*.vnnlib`` listed in ``specs/expected.csv``."""
    summary: list[str] = []
    makers = {
        "collision_avoidance": (make_collision_avoidance, ("ACAS Xu-style collision avoidance, 5 normalised inputs "
                                "(distance, bearing, intruder heading, own speed, intruder speed); scores of COC, "
                                "weak left, weak right, strong left, strong right; the advisory is the argmin score.")),
        "digits_classifier": (make_digits, ("8x8 digits classifier (scikit-learn digits, pixels in [0, 1], row-major); "
                              "the predicted digit is the argmax output.")),
        "tanh_controller": (make_tanh_controller, ("tanh controller: inputs lateral error, lateral velocity, heading "
                            "error in [-1, 1]; outputs steering and throttle.")),
    }
    networks: dict[str, Mlp] = {}
    for name, (make, doc) in makers.items():
        mlp, quality = make()
        networks[name] = mlp
        data = mlp_onnx(mlp, name, doc).SerializeToString()
        write_bytes(out / "models" / f"{name}.onnx", data)
        summary.append(f"models/{name}.onnx: {'-'.join(map(str, mlp.sizes))} {mlp.activation}, "
                       f"{parameter_count(mlp)} parameters, {len(data)} bytes; {quality}")
    if not with_specs:
        return summary
    (out / "specs").mkdir(parents=True, exist_ok=True)
    properties = collision_properties() + digits_properties(networks["digits_classifier"]) + controller_properties()
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["onnx", "vnnlib", "expected"])
    for prop in properties:
        mlp, onnx_path = networks[prop.model], out / "models" / f"{prop.model}.onnx"
        verdict, how = expected_verdict(prop, mlp, onnx_path)
        if verdict != prop.intended:
            raise RuntimeError(f"{prop.name}: meant to be {prop.intended}, but the oracle says {verdict} ({how})")
        meaning = "violated (sat)" if verdict == "sat" else "holds (unsat)"
        text = vnnlib_text(prop, mlp.sizes[-1], f"{meaning}, established by {how}")
        write_bytes(out / "specs" / f"{prop.name}.vnnlib", text.encode())
        writer.writerow([f"models/{prop.model}.onnx", f"specs/{prop.name}.vnnlib", verdict])
        summary.append(f"specs/{prop.name}.vnnlib: {verdict} ({how})")
    write_bytes(out / "specs" / "expected.csv", table.getvalue().encode())
    return summary


def parameter_count(mlp: Mlp) -> int:
    return sum(w.size + b.size for w, b in zip(mlp.weights, mlp.biases))


MNIST_DOC = "MNIST digits classifier (28x28 pixels in [0, 1]); the predicted digit is the argmax output."


def make_mnist(out: Path, with_specs: bool, only_suites: tuple[str, ...] = ()) -> list[str]:
    """The MNIST models (trained on `datasets.mnist`'s 4,000 training digits) and their property
    suites ``specs/<suite>/`` (only those named in ``only_suites`` when it is not empty)."""
    summary: list[str] = []
    mlp, quality = make_mnist_mlp()
    data = mlp_onnx(mlp, "mnist_mlp", f"{MNIST_DOC} ReLU MLP {'-'.join(map(str, mlp.sizes))}. {quality}").SerializeToString()
    write_bytes(out / "models" / "mnist_mlp.onnx", data)
    summary.append(f"models/mnist_mlp.onnx: {'-'.join(map(str, mlp.sizes))} relu, {parameter_count(mlp)} parameters, "
                   f"{len(data)} bytes; {quality}")
    cnns = {"mnist_cnn": make_mnist_cnn(), "mnist_cnn_backdoor": make_mnist_cnn_backdoor()}
    for name, (cnn, quality) in cnns.items():
        layers = ", ".join(f"Conv {w.shape[1]}->{w.shape[0]} k{w.shape[2]} s{cnn.stride}, Relu" for w, _ in cnn.convs)
        architecture = f"{layers}, Flatten, Gemm {cnn.head[0].shape[1]}->{cnn.head[0].shape[0]}"
        data = cnn_onnx(cnn, name, f"{MNIST_DOC} CNN: {architecture}. {quality}").SerializeToString()
        path = out / "models" / f"{name}.onnx"
        write_bytes(path, data)
        dense = cnn.as_mlp()
        images = datasets.mnist("held_out").x[:16]
        if not np.allclose(onnx_outputs(path, images), dense.forward(images), rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"{name}: the dense form used by the oracles computes something else than the ONNX file")
        parameters = sum(w.size + b.size for w, b in cnn.convs) + cnn.head[0].size + cnn.head[1].size
        summary.append(f"models/{name}.onnx: {architecture}, {parameters} parameters, {len(data)} bytes; {quality}")
    if not with_specs:
        return summary
    cnn_dense, backdoor_dense = cnns["mnist_cnn"][0].as_mlp(), cnns["mnist_cnn_backdoor"][0].as_mlp()
    # The CNNs' big-M MILPs (hundreds of unstable ReLUs under interval bounds) do not finish in
    # minutes, so their suites record only counterexamples; the rest stays unknown.
    suites = ((robustness_suite("mnist_mlp_robust", "mnist_mlp", mlp, MLP_SUITE_EPS, with_milp=True), mlp),
              (robustness_suite("mnist_cnn_robust", "mnist_cnn", cnn_dense, CNN_SUITE_EPS, with_milp=False), cnn_dense),
              (backdoor_suite("mnist_cnn_backdoor", "mnist_cnn_backdoor", backdoor_dense, BACKDOOR_SUITE_EPS,
                              with_milp=False), backdoor_dense))
    for suite, network in suites:
        if not only_suites or suite.name in only_suites:
            summary += write_suite(out, suite, network)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT),
                        help="folder that receives models/ and specs/ (default: the repository root)")
    parser.add_argument("--models-only", action="store_true", help="write the networks, not the properties")
    parser.add_argument("--family", choices=FAMILIES, action="append",
                        help="make only this family: small (the three small networks) or mnist (repeatable; default all)")
    parser.add_argument("--suite", action="append", default=[],
                        help="of the MNIST suites write only this one (repeatable; default all)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for line in make_all(Path(args.out), with_specs=not args.models_only, families=tuple(args.family or FAMILIES),
                         only_suites=tuple(args.suite)):
        print(line, flush=True)
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
