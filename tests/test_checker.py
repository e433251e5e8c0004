"""The independent certificate checker (`verirepair.checker`): its readers against the verifier's
and onnxruntime, its bounds against exact rational arithmetic, real certificates accepted, forged
ones (false properties, tightened bounds, missing leaves, other files, broken JSON) rejected."""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import onnx_factory
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import verirepair
from verirepair.checker import bounds as checker_bounds
from verirepair.checker import check_certificate
from verirepair.checker.onnx_reader import (
    AffineStep,
    DenseNetwork,
    UnsupportedNetwork,
    read_network,
)
from verirepair.checker.vnnlib_reader import read_property
from verirepair.spec import parse_vnnlib

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "verirepair" / "checker"
# the shipped unsat problems with certifiable proofs (digits_classifier has 64 inputs: no input split)
SHIPPED_UNSAT = [("collision_avoidance.onnx", "collision_avoidance_far_coc.vnnlib"),
                 ("collision_avoidance.onnx", "collision_avoidance_close_left_clear.vnnlib")]
ACASXU_UNSAT = [("ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"), ("ACASXU_run2a_1_9_batch_2000.onnx", "prop_1.vnnlib")]


# ----- independence --------------------------------------------------------------------------------
def test_the_checker_imports_nothing_of_the_verifier() -> None:
    allowed = ("verirepair.errors", "verirepair.files")
    for source in CHECKER.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = {0: "", 1: "verirepair.checker", 2: "verirepair"}[node.level]
                module = ".".join(part for part in (base, node.module or "") if part)
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                inside = name.startswith("verirepair.checker") or name in allowed or not name.startswith("verirepair")
                assert inside and name.split(".")[0] not in ("torch", "onnxruntime"), f"{source.name} imports {name}"


# ----- the readers -----------------------------------------------------------------------------------
def _onnxruntime_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    given = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in given.shape]
    return np.stack([session.run(None, {given.name: row.astype(np.float32).reshape(shape)})[0].reshape(-1)
                     for row in x])


def _agrees_with_onnxruntime(path: Path, seed: int = 0) -> None:
    network = read_network(path.read_bytes(), path)
    x = np.random.default_rng(seed).uniform(-1, 1, (8, network.n_inputs)).astype(np.float32).astype(np.float64)
    expected = _onnxruntime_outputs(path, x)
    got = network.evaluate(x)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4 * (1 + np.abs(expected).max())), path.name


def _benchmark_networks(benchmarks: Path) -> list[Path]:
    return sorted((benchmarks / "acasxu" / "onnx").glob("*.onnx")) + sorted((benchmarks / "mnist_fc" / "onnx").glob("*.onnx"))


def test_onnx_reader_agrees_with_onnxruntime_on_every_benchmark_network(benchmarks: Path) -> None:
    for path in _benchmark_networks(benchmarks):
        _agrees_with_onnxruntime(path)


@pytest.mark.parametrize("name", ["collision_avoidance.onnx", "digits_classifier.onnx", "tanh_controller.onnx"])
def test_onnx_reader_agrees_with_onnxruntime_on_the_shipped_dense_models(name: str) -> None:
    _agrees_with_onnxruntime(ROOT / "models" / name)


@pytest.mark.parametrize("name", ["mlp", "analytic_mlp", "matmul", "add", "sub", "sub_constant_first", "mul", "relu",
                                  "sigmoid", "tanh",
                                  "flatten", "reshape_leading_minus_one", "constant", "identity",
                                  "gemm_transB_alpha_beta"])
def test_onnx_reader_agrees_with_onnxruntime_per_operator(name: str, tmp_path: Path) -> None:
    _agrees_with_onnxruntime(onnx_factory.save(onnx_factory.CONVERTER_MODELS[name](), tmp_path / f"{name}.onnx"))


def test_div_by_a_power_of_two_is_read_and_other_divisors_only_on_the_input(tmp_path: Path) -> None:
    divisor = numpy_helper.from_array(np.array([[0.5, 4.0, -2.0]], dtype=np.float32), "C")
    weight = numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")
    after_matmul = [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
                    helper.make_node("Div", ["h", "C"], ["y"], name="div")]
    halves = onnx_factory.build_model(after_matmul, [("x", [1, 3])], [("y", [1, 3])], [divisor, weight])
    _agrees_with_onnxruntime(onnx_factory.save(halves, tmp_path / "halves.onnx"))
    # a leading Div by 3 is input normalisation, applied to boxes with outward rounding
    _agrees_with_onnxruntime(onnx_factory.save(onnx_factory.CONVERTER_MODELS["div"](), tmp_path / "div.onnx"))
    thirds = numpy_helper.from_array(np.full((1, 3), 3.0, dtype=np.float32), "C")
    with pytest.raises(UnsupportedNetwork, match="power of two"):
        read_network(onnx_factory.build_model(after_matmul, [("x", [1, 3])], [("y", [1, 3])], [thirds, weight])
                     .SerializeToString(), "div.onnx")


def test_the_input_map_encloses_the_exact_image_of_a_box() -> None:
    """Sub then Div by a constant that has no exact reciprocal (as MNIST normalisation does): the
    box the steps see contains the exact image of every input box, computed with fractions."""
    network = DenseNetwork((AffineStep(np.eye(2), np.zeros(2)),),
                           (("sub", np.array([0.1307, -1.0])), ("div", np.array([0.3081, -3.0]))))
    rng = np.random.default_rng(0)
    lower = rng.uniform(-1, 1, (50, 2))
    upper = lower + rng.uniform(0, 1, (50, 2))
    mapped_lower, mapped_upper = network.input_box(lower, upper)
    for row in range(50):
        for n, (c, d) in enumerate(((0.1307, 0.3081), (-1.0, -3.0))):
            ends = [(Fraction(float(v)) - Fraction(c)) / Fraction(d) for v in (lower[row, n], upper[row, n])]
            assert Fraction(float(mapped_lower[row, n])) <= min(ends) and max(ends) <= Fraction(float(mapped_upper[row, n]))


@pytest.mark.parametrize("name", ["conv", "max_pool", "transpose"])
def test_unsupported_operators_are_named(name: str) -> None:
    model = onnx_factory.CONVERTER_MODELS[name]()
    with pytest.raises(UnsupportedNetwork) as caught:
        read_network(model.SerializeToString(), f"{name}.onnx")
    assert any(node.op_type in str(caught.value) for node in model.graph.node), str(caught.value)


def _same_property(path: Path) -> None:
    expected = parse_vnnlib(path)
    got = read_property(path.read_text())
    assert (got.n_inputs, got.n_outputs) == (expected.n_inputs, expected.n_outputs)
    assert len(got.regions) == len(expected.regions), path.name
    for mine, theirs in zip(got.regions, expected.regions):
        assert np.array_equal(mine.lower, theirs.box.lower) and np.array_equal(mine.upper, theirs.box.upper), path.name
        assert len(mine.clauses) == len(theirs.clauses), path.name
        for (A, b), clause in zip(mine.clauses, theirs.clauses):
            assert np.array_equal(A, clause.A) and np.array_equal(b, clause.b), path.name


def test_vnnlib_reader_agrees_with_the_verifiers_parser_on_every_benchmark_property(benchmarks: Path) -> None:
    paths = sorted((benchmarks / "acasxu" / "vnnlib").glob("*.vnnlib")) + sorted(
        (benchmarks / "mnist_fc" / "vnnlib").glob("*.vnnlib"))
    assert len(paths) >= 40
    for path in paths:
        _same_property(path)


def test_vnnlib_reader_agrees_with_the_verifiers_parser_on_the_shipped_specs() -> None:
    for path in sorted((ROOT / "specs").glob("*.vnnlib")):
        _same_property(path)


# ----- bounds against exact arithmetic -------------------------------------------------------------------
def _exact_forward(network: DenseNetwork, x: np.ndarray) -> tuple[list[list[Fraction]], list[Fraction]]:
    h = [Fraction(float(v)) for v in x]
    pre = []
    for step in network.steps:
        z = [sum((Fraction(float(w)) * v for w, v in zip(row, h)), Fraction(float(b)))
             for row, b in zip(step.weight, step.bias)]
        pre.append(z)
        h = [max(v, Fraction(0)) for v in z] if step.relu else z
    return pre, h


def _random_network(rng: np.random.Generator, sizes: list[int], offset: float) -> DenseNetwork:
    steps = []
    for k in range(len(sizes) - 1):
        weight = rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k])
        bias = rng.standard_normal(sizes[k + 1]) * 0.1 + offset
        steps.append(AffineStep(weight, bias, "Relu" if k < len(sizes) - 2 else None))
    return DenseNetwork(tuple(steps))


def _unrecorded(network: DenseNetwork, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.full((batch, s.weight.shape[0]), np.inf), np.full((batch, s.weight.shape[0]), -np.inf))
            for s in network.steps if s.relu]


@pytest.mark.parametrize("seed", range(6))
def test_bounds_hold_in_exact_arithmetic(seed: int) -> None:
    """Layer and row bounds contain the exact values at sampled points and vertices; on networks
    affine on the box (offset 3: every ReLU active) the row bound is compared with the exact minimum,
    which a vertex attains, so unaccounted rounding would show."""
    rng = np.random.default_rng(seed)
    network = _random_network(rng, [3, 6, 6, 2], offset=3.0 if seed % 2 else 0.0)
    centre = rng.uniform(-1, 1, 3)
    lower, upper = centre - 0.01 * (1 + seed), centre + 0.01 * (1 + seed)
    A, b = rng.standard_normal((2, 2)), rng.standard_normal(2)
    bounds = checker_bounds.layer_bounds(network, lower[None], upper[None], _unrecorded(network, 1))
    rows, _ = checker_bounds.row_bounds(network, bounds, A, b)
    vertices = [np.where([(v >> i) & 1 for i in range(3)], upper, lower) for v in range(8)]
    points = vertices + [lower + rng.random(3) * (upper - lower) for _ in range(12)]
    for x in points:
        pre, y = _exact_forward(network, x)
        for (z_lower, z_upper), z in zip(bounds.pre_activation, pre):
            assert all(Fraction(float(l)) <= v <= Fraction(float(u)) for l, v, u in zip(z_lower[0], z, z_upper[0]))
        for i in range(2):
            exact_row = sum((Fraction(float(a)) * v for a, v in zip(A[i], y)), -Fraction(float(b[i])))
            assert Fraction(float(rows[0, i])) <= exact_row


def test_recorded_bounds_tighter_than_derived_change_nothing() -> None:
    """The looser of recorded and derived is used: recorded bounds shifted inward by 1e-12 relative,
    or collapsed to a point, give exactly the bounds derived without them."""
    rng = np.random.default_rng(7)
    network = _random_network(rng, [3, 8, 8, 2], offset=0.0)
    lower, upper = np.full((1, 3), -0.5), np.full((1, 3), 0.5)
    own = checker_bounds.layer_bounds(network, lower, upper, _unrecorded(network, 1))
    relu_bounds = [own.pre_activation[k] for k, s in enumerate(network.steps) if s.relu]
    shifted = [(l + 1e-12 * np.abs(l), u - 1e-12 * np.abs(u)) for l, u in relu_bounds]
    collapsed = [((l + u) / 2, (l + u) / 2) for l, u in relu_bounds]
    for recorded in (shifted, collapsed):
        got = checker_bounds.layer_bounds(network, lower, upper, recorded)
        for (l0, u0), (l1, u1) in zip(own.pre_activation, got.pre_activation):
            assert np.array_equal(l0, l1) and np.array_equal(u0, u1)


# ----- certificates: real ones accepted ----------------------------------------------------------------
def _certify(onnx_path: Path, vnnlib_path: Path, out: Path, timeout: float = 120.0) -> Path:
    verdict = verirepair.verify(onnx_path, vnnlib_path, timeout=timeout, certificate=out)
    assert verdict.status == "unsat" and out.exists(), verdict.notes
    return out


@pytest.mark.parametrize(("network", "spec"), SHIPPED_UNSAT)
def test_certificates_of_the_shipped_models_check(network: str, spec: str, tmp_path: Path) -> None:
    onnx_path, vnnlib_path = ROOT / "models" / network, ROOT / "specs" / spec
    result = check_certificate(onnx_path, vnnlib_path, _certify(onnx_path, vnnlib_path, tmp_path / "proof.json"))
    assert result.ok, result.message
    assert result.closings_checked >= 1


@pytest.mark.parametrize(("network", "spec"), ACASXU_UNSAT)
def test_certificates_of_acasxu_unsat_instances_check(network: str, spec: str, benchmarks: Path, tmp_path: Path) -> None:
    onnx_path, vnnlib_path = benchmarks / "acasxu" / "onnx" / network, benchmarks / "acasxu" / "vnnlib" / spec
    result = check_certificate(onnx_path, vnnlib_path, _certify(onnx_path, vnnlib_path, tmp_path / "proof.json"))
    assert result.ok, result.message


# ----- certificates: forged ones rejected ----------------------------------------------------------------
@pytest.fixture(scope="module")
def far_coc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("far_coc")
    onnx_path, vnnlib_path = ROOT / "models" / "collision_avoidance.onnx", ROOT / "specs" / "collision_avoidance_far_coc.vnnlib"
    return onnx_path, vnnlib_path, _certify(onnx_path, vnnlib_path, folder / "proof.json")


def _edited(path: Path, out: Path, change) -> Path:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    change(data)
    out.write_text(json.dumps(data))
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_certificate_moved_to_a_false_property_is_rejected(far_coc: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The far_coc proof, its file hash swapped for that of close_left (violated: sat) with the same
    network and the same shape of property, must not prove close_left."""
    onnx_path, _, proof = far_coc
    false_spec = ROOT / "specs" / "collision_avoidance_close_left.vnnlib"
    forged = _edited(proof, tmp_path / "forged.json", lambda d: d.update(vnnlib_sha256=_sha256(false_spec)))
    result = check_certificate(onnx_path, false_spec, forged)
    assert not result.ok


def _write_network(weights: list[tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    nodes, inits, current = [], [], "x"
    for k, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{k}"), numpy_helper.from_array(b.astype(np.float32), f"b{k}")]
        out = "y" if k == len(weights) - 1 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"b{k}"], [out], transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"]))
            current = f"h{k}"
    model = onnx_factory.build_model(nodes, [("x", [1, weights[0][0].shape[1]])], [("y", [1, weights[-1][0].shape[0]])], inits)
    onnx.save(model, str(path))
    return path


def _touching_problem(tmp_path: Path) -> tuple[Path, Path, DenseNetwork, np.ndarray, np.ndarray]:
    """A network affine on the box (every ReLU active) and the property y_0 < M with M the exact
    maximum of y_0 over the box, rounded down to float64: the violation y_0 >= M is reachable (at a
    vertex), so the property is false, by a margin of at most one rounding."""
    rng = np.random.default_rng(11)
    weights = [(rng.standard_normal((4, 3)), rng.standard_normal(4) * 0.1 + 4.0),
               (rng.standard_normal((2, 4)), rng.standard_normal(2))]
    onnx_path = _write_network(weights, tmp_path / "affine.onnx")
    network = read_network(onnx_path.read_bytes(), onnx_path)
    lower, upper = np.full(3, 0.1), np.full(3, 0.3)
    best = max(_exact_forward(network, np.where([(v >> i) & 1 for i in range(3)], upper, lower))[1][0] for v in range(8))
    threshold = float(best)
    if Fraction(threshold) > best:
        threshold = float(np.nextafter(threshold, -np.inf))
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(3)) + "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    text += "".join(f"(assert (>= X_{i} {float(lower[i])!r}))\n(assert (<= X_{i} {float(upper[i])!r}))\n" for i in range(3))
    text += f"(assert (>= Y_0 {threshold!r}))\n"
    vnnlib_path = tmp_path / "touching.vnnlib"
    vnnlib_path.write_text(text)
    return onnx_path, vnnlib_path, network, lower, upper


def _root_closing(network: DenseNetwork, lower: np.ndarray, upper: np.ndarray, inward: float) -> list:
    own = checker_bounds.layer_bounds(network, lower[None], upper[None], _unrecorded(network, 1))
    bounds = [[(l[0] + inward * np.abs(l[0])).tolist(), (u[0] - inward * np.abs(u[0])).tolist()]
              for (l, u), step in zip(own.pre_activation, network.steps) if step.activation is not None]
    return ["", [0], [[1.0]], bounds]


@pytest.mark.parametrize("inward", [0.0, 1e-12, 0.1])
def test_a_hand_built_certificate_of_a_barely_false_property_is_rejected(inward: float, tmp_path: Path) -> None:
    onnx_path, vnnlib_path, network, lower, upper = _touching_problem(tmp_path)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"format": "verirepair-certificate-1", "onnx_sha256": _sha256(onnx_path),
                                  "vnnlib_sha256": _sha256(vnnlib_path),
                                  "regions": [[_root_closing(network, lower, upper, inward)]]}))
    result = check_certificate(onnx_path, vnnlib_path, forged)
    assert not result.ok and "not positive" in result.message, result.message


def _drop_a_leaf(data: dict) -> None:
    region = data["regions"][0]
    if len(region) == 1:  # a root-only proof: claim a split instead, leaving half uncovered
        region[0][0] = "0L"
    else:
        region.pop()


def _tighten_every_bound(data: dict) -> None:
    for closing in data["regions"][0]:
        closing[3] = [[[v + 1e-12 * abs(v) for v in lower], [v - 1e-12 * abs(v) for v in upper]]
                      for lower, upper in closing[3]]


def _negate_weights(data: dict) -> None:
    closing = data["regions"][0][0]
    closing[2][0] = [-w for w in closing[2][0]]


def _wrong_hash(data: dict) -> None:
    data["onnx_sha256"] = "0" * 64


@pytest.mark.parametrize("change", [_drop_a_leaf, _negate_weights, _wrong_hash])
def test_a_tampered_certificate_is_rejected(change, far_coc: tuple[Path, Path, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    onnx_path, vnnlib_path, proof = far_coc
    assert not check_certificate(onnx_path, vnnlib_path, _edited(proof, tmp_path / "tampered.json", change)).ok


def _closings_with_slopes(data: dict) -> list[list]:
    return [closing for closing in data["regions"][0] if len(closing) == 5]


def test_the_recorded_slopes_are_what_closes_the_nodes_alpha_crown_closed(far_coc: tuple[Path, Path, Path],
                                                                           tmp_path: Path) -> None:
    """The verifier closes a node with optimised slopes only where CROWN's left it open, so the
    checker must use them: without them (or with each slope mirrored) a closing fails."""
    onnx_path, vnnlib_path, proof = far_coc
    assert _closings_with_slopes(json.loads(proof.read_text())), "the far_coc proof no longer uses α-CROWN closings"

    def drop(data: dict) -> None:
        for closing in _closings_with_slopes(data):
            del closing[4]

    def mirror(data: dict) -> None:
        for closing in _closings_with_slopes(data):
            for entry in closing[4]:
                entry[3] = 1.0 - entry[3]

    for change in (drop, mirror):
        result = check_certificate(onnx_path, vnnlib_path, _edited(proof, tmp_path / f"{change.__name__}.json", change))
        assert not result.ok and "not positive" in result.message, result.message


@pytest.mark.parametrize("entry", [[99, 0, 0, 0.5], [0, 99, 0, 0.5], [0, 0, 9999, 0.5], [0, 0, 0], [-1, 0, 0, 0.5]])
def test_slopes_of_rows_layers_or_neurons_that_do_not_exist_are_rejected(entry: list, far_coc: tuple[Path, Path, Path],
                                                                        tmp_path: Path) -> None:
    onnx_path, vnnlib_path, proof = far_coc
    forged = _edited(proof, tmp_path / "slopes.json", lambda d: _closings_with_slopes(d)[0][4].append(entry))
    assert not check_certificate(onnx_path, vnnlib_path, forged).ok


def test_bounds_tightened_by_1e_12_leave_a_valid_certificate_valid(far_coc: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Recorded bounds are never trusted beyond the checker's own: tightening them changes nothing."""
    onnx_path, vnnlib_path, proof = far_coc
    assert check_certificate(onnx_path, vnnlib_path, _edited(proof, tmp_path / "tight.json", _tighten_every_bound)).ok


def _shaped(regions: object) -> str:
    return json.dumps({"format": "verirepair-certificate-1", "onnx_sha256": "0" * 64, "vnnlib_sha256": "0" * 64,
                       "regions": regions})


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": "verirepair-certificate-1"}', '{"format": "other"}',
                                  _shaped([[["0X", [0], [[1.0]], []]]]), _shaped([[["", [0], [[float("nan")]], []]]]),
                                  _shaped([[["", [0, 0], [[1.0], [1.0]], []]]]), _shaped([[["", [0], [], []]]]),
                                  _shaped([[["", [0], [[10**400]], []]]]), _shaped({"0": []})])
def test_a_malformed_certificate_is_a_clean_rejection(text: str, far_coc: tuple[Path, Path, Path], tmp_path: Path) -> None:
    onnx_path, vnnlib_path, _ = far_coc
    path = tmp_path / "broken.json"
    path.write_text(text)
    result = check_certificate(onnx_path, vnnlib_path, path)
    assert not result.ok and result.message.startswith("not a verirepair certificate"), result.message


def test_an_unsupported_network_is_a_rejection_naming_its_operators(tmp_path: Path) -> None:
    onnx_path, vnnlib_path = ROOT / "models" / "mnist_cnn.onnx", ROOT / "specs" / "tanh_controller_steer_back.vnnlib"
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps({"format": "verirepair-certificate-1", "onnx_sha256": _sha256(onnx_path),
                                 "vnnlib_sha256": _sha256(vnnlib_path), "regions": [[]]}))
    result = check_certificate(onnx_path, vnnlib_path, proof)
    assert not result.ok and "Conv" in result.message


def test_a_certificate_of_gzip_compressed_files_checks(tmp_path: Path) -> None:
    onnx_path, vnnlib_path = tmp_path / "net.onnx.gz", tmp_path / "spec.vnnlib.gz"
    onnx_path.write_bytes(gzip.compress((ROOT / "models" / "collision_avoidance.onnx").read_bytes()))
    vnnlib_path.write_bytes(gzip.compress((ROOT / "specs" / "collision_avoidance_far_coc.vnnlib").read_bytes()))
    result = check_certificate(onnx_path, vnnlib_path, _certify(onnx_path, vnnlib_path, tmp_path / "proof.json"))
    assert result.ok, result.message
