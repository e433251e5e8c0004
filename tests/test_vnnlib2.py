"""VNN-LIB 2.0 queries read into the same `Spec` as their 1.0 files, and gzip-compressed inputs.

The 2.0 texts are made from the 1.0 files by a textual rewrite (declarations replaced by one
network, ``X_i`` by ``X[...]``), independent of both readers; the oracle is the 1.0 reader.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from verirepair.bench.instances import read_instances
from verirepair.cli import main
from verirepair.errors import InputError, UnsupportedError
from verirepair.files import looks_like_vnnlib, read_input_bytes
from verirepair.network import load_network, run_onnxruntime
from verirepair.spec import Spec, parse_vnnlib, parse_vnnlib_text

ACAS_INPUT_SHAPE = (1, 1, 1, 5)  # the ONNX input of every ACAS Xu network
NUMBER_2_0 = re.compile(r"-?\d+\.\d+")  # the 2.0 grammar's decimal: no exponent, digits on both sides


def vnnlib2_of(text: str, input_shape: tuple[int, ...], element: str = "float32") -> str:
    """A VNN-LIB 1.0 text rewritten as 2.0: one network ``net`` with input ``X`` of ``input_shape``
    and output ``Y``, each ``X_i``/``Y_j`` as a tensor element, ``=`` as ``==``."""
    body = re.sub(r";[^\n]*", "", text)
    n_outputs = len(re.findall(r"\(declare-const Y_\d+ Real\)", body))
    body = re.sub(r"\(declare-const [XY]_\d+ Real\)", "", body)
    for token in re.findall(r"[^\s()]+", body):
        if token[0].isdigit() or token[0] in "+-." and len(token) > 1:
            assert NUMBER_2_0.fullmatch(token), f"{token} has no 2.0 spelling in this rewrite"

    def element_of(match: re.Match[str]) -> str:
        if match.group(1) == "Y":
            return f"Y[{match.group(2)}]"
        return f"X[{', '.join(str(int(i)) for i in np.unravel_index(int(match.group(2)), input_shape))}]"

    body = re.sub(r"\b([XY])_(\d+)\b", element_of, body)
    body = re.sub(r"\(=\s", "(== ", body)
    header = (f"; rewritten as VNN-LIB 2.0\n(vnnlib-version <2.0>)\n(declare-network net\n"
              f"  (declare-input X {element} [{', '.join(map(str, input_shape))}])\n"
              f"  (declare-output Y {element} [{n_outputs}]))\n")
    return header + body


def assert_same_spec(got: Spec, expected: Spec) -> None:
    assert (got.n_inputs, got.n_outputs, len(got.regions)) == (expected.n_inputs, expected.n_outputs, len(expected.regions))
    for region, oracle in zip(got.regions, expected.regions):
        for side in ("lower", "upper", "open_lower", "open_upper"):
            np.testing.assert_array_equal(getattr(region.box, side), getattr(oracle.box, side), err_msg=side)
        assert len(region.clauses) == len(oracle.clauses)
        for clause, oracle_clause in zip(region.clauses, oracle.clauses):
            np.testing.assert_array_equal(clause.A, oracle_clause.A)
            np.testing.assert_array_equal(clause.b, oracle_clause.b)
            np.testing.assert_array_equal(clause.strict, oracle_clause.strict)


def assert_one_line(error: InputError, source: str, *words: str) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith(source), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.fixture(scope="module")
def vnnlib_package():  # type: ignore[no-untyped-def]
    return pytest.importorskip("vnnlib", reason="the vnnlib package (extra vnnlib2) is not installed")


# ----- the same Spec from 2.0 as from 1.0 ---------------------------------------------------------
def test_every_acasxu_property_reads_the_same_in_2_0(benchmarks: Path, vnnlib_package, tmp_path: Path) -> None:
    files = sorted((benchmarks / "acasxu" / "vnnlib").glob("*.vnnlib"))
    assert len(files) == 10
    for path in files:
        converted = tmp_path / path.name
        converted.write_text(vnnlib2_of(path.read_text(), ACAS_INPUT_SHAPE))
        assert_same_spec(parse_vnnlib(converted), parse_vnnlib(path))


STRICT_1_0 = """
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const X_2 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (or (and (> X_0 -0.5) (<= X_0 0.5) (>= X_1 0.0) (< X_1 1.0))
            (and (>= X_0 1.0) (<= X_0 2.0) (> X_1 -1.0) (<= X_1 0.0))))
(assert (and (>= X_2 0.25) (<= X_2 0.25)))
(assert (or (< (+ Y_0 (* 2.5 Y_1) -1.0) (- Y_2 3.0))
            (and (= (- Y_0) Y_1) (> Y_2 0.125))
            (<= (- Y_0 Y_1 Y_2) 0.0)))
"""


def test_strict_equal_and_arithmetic_read_the_same_in_2_0(vnnlib_package) -> None:
    text = vnnlib2_of(STRICT_1_0, (3,), element="float64")
    assert_same_spec(parse_vnnlib_text(text, "strict2.vnnlib"), parse_vnnlib_text(STRICT_1_0, "strict1.vnnlib"))


def test_not_equal_is_less_or_greater(vnnlib_package) -> None:
    head = "(vnnlib-version <2.0>)\n(declare-network n (declare-input X float32 [1]) (declare-output Y float32 [2]))\n"
    box = "(assert (and (>= X[0] 0.0) (<= X[0] 1.0)))\n"
    got = parse_vnnlib_text(head + box + "(assert (!= Y[0] Y[1]))\n", "ne.vnnlib")
    expected = parse_vnnlib_text(head + box + "(assert (or (< Y[0] Y[1]) (> Y[0] Y[1])))\n", "or.vnnlib")
    assert_same_spec(got, expected)
    assert all(clause.strict.all() for clause in got.regions[0].clauses)


def test_multi_dimensional_input_is_numbered_row_major(vnnlib_package) -> None:
    text = ("(vnnlib-version <2.0>)\n(declare-network n (declare-input X float32 [2, 3]) (declare-output Y float32 [1]))\n"
            + "".join(f"(assert (and (>= X[{i}, {j}] {i}.{j}) (<= X[{i}, {j}] {i + 1}.{j})))\n" for i in range(2) for j in range(3))
            + "(assert (<= Y[0] 0.0))\n")
    box = parse_vnnlib_text(text, "grid.vnnlib").regions[0].box
    np.testing.assert_array_equal(box.lower, [0.0, 0.1, 0.2, 1.0, 1.1, 1.2])
    np.testing.assert_array_equal(box.upper, [1.0, 1.1, 1.2, 2.0, 2.1, 2.2])


# ----- the same verdict from 2.0 as from 1.0 ------------------------------------------------------
def ground_truth(benchmarks: Path) -> dict[tuple[str, str], str]:
    with open(benchmarks / "acasxu" / "ground_truth.csv", newline="") as stream:
        return {(row["onnx"], row["vnnlib"]): row["result"] for row in csv.DictReader(stream)}


def verdict(capsys: pytest.CaptureFixture[str], network: Path, spec: Path) -> str:
    main(["verify", str(network), str(spec), "--timeout", "120", "--json"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["result"]


@pytest.mark.parametrize("net, prop", [("1_1", "prop_1"), ("2_1", "prop_2")])
def test_acasxu_verdict_from_2_0_equals_1_0(benchmarks: Path, vnnlib_package, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], net: str, prop: str) -> None:
    onnx_name, spec_name = f"onnx/ACASXU_run2a_{net}_batch_2000.onnx", f"vnnlib/{prop}.vnnlib"
    network, spec_1_0 = benchmarks / "acasxu" / onnx_name, benchmarks / "acasxu" / spec_name
    spec_2_0 = tmp_path / f"{prop}_v2.vnnlib"
    spec_2_0.write_text(vnnlib2_of(spec_1_0.read_text(), ACAS_INPUT_SHAPE))
    expected = ground_truth(benchmarks)[(onnx_name, spec_name)]
    assert verdict(capsys, network, spec_1_0) == expected
    assert verdict(capsys, network, spec_2_0) == expected


# ----- gzip-compressed files ----------------------------------------------------------------------
def gzip_copy(path: Path, folder: Path, name: str | None = None) -> Path:
    target = folder / (name or path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def test_gzip_network_and_property_give_the_same_verdict(benchmarks: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    network = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_1_batch_2000.onnx"
    spec = benchmarks / "acasxu" / "vnnlib" / "prop_2.vnnlib"
    packed_network, packed_spec = gzip_copy(network, tmp_path), gzip_copy(spec, tmp_path)
    assert looks_like_vnnlib(packed_spec) and not looks_like_vnnlib(packed_network)
    # the property first: the CLI tells the files apart by their names
    assert verdict(capsys, packed_spec, packed_network) == verdict(capsys, network, spec) == "sat"


def test_gzip_is_recognised_by_content_whatever_the_name(benchmarks: Path, tmp_path: Path) -> None:
    network = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
    spec = benchmarks / "acasxu" / "vnnlib" / "prop_3.vnnlib"
    packed_network, packed_spec = gzip_copy(network, tmp_path, "net.bin"), gzip_copy(spec, tmp_path, "prop.txt")
    assert looks_like_vnnlib(packed_spec) and not looks_like_vnnlib(packed_network)
    assert read_input_bytes(packed_spec) == spec.read_bytes()
    assert_same_spec(parse_vnnlib(packed_spec), parse_vnnlib(spec))
    plain, packed = load_network(network), load_network(packed_network)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (4, plain.n_inputs))
    np.testing.assert_array_equal(run_onnxruntime(packed, x), run_onnxruntime(plain, x))
    assert [node.op_type for node in packed.nodes] == [node.op_type for node in plain.nodes]


def test_gzip_2_0_property_reads_like_its_text(benchmarks: Path, vnnlib_package, tmp_path: Path) -> None:
    spec = benchmarks / "acasxu" / "vnnlib" / "prop_6.vnnlib"
    text = tmp_path / "prop_6.vnnlib"
    text.write_text(vnnlib2_of(spec.read_text(), ACAS_INPUT_SHAPE))
    assert_same_spec(parse_vnnlib(gzip_copy(text, tmp_path)), parse_vnnlib(spec))


@pytest.mark.parametrize("name", ["broken.vnnlib.gz", "broken.onnx.gz"])
def test_corrupt_gzip_is_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"(assert (<= Y_0 1.0))\n" * 50)[:40])
    reader = parse_vnnlib if name.endswith(".vnnlib.gz") else load_network
    with pytest.raises(InputError) as caught:
        reader(path)
    assert_one_line(caught.value, str(path), "cannot decompress")


def test_cli_reports_a_corrupt_gzip_as_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 benchmarks: Path) -> None:
    spec = tmp_path / "prop.vnnlib.gz"
    spec.write_bytes(b"\x1f\x8b\x08\x00garbage")
    network = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
    assert main(["verify", str(network), str(spec), "--timeout", "5"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith(f"verirepair: error: {spec}"), message
    assert "cannot decompress" in message


# ----- what 2.0 allows and verirepair cannot do: one line each -------------------------------------
VERSION = "(vnnlib-version <2.0>)\n"
ONE_BY_ONE = VERSION + "(declare-network a (declare-input X float32 [1]) (declare-output Y float32 [1]))\n"
BOX = "(assert (and (>= X[0] 0.0) (<= X[0] 1.0)))\n(assert (<= Y[0] 0.5))\n"
REFUSED = {  # text, place, reason
    "two_networks": (ONE_BY_ONE + "(declare-network b (declare-input X2 float32 [1]) (declare-output Y2 float32 [1]))\n"
                     + BOX, "line 3", "2 networks"),
    "hidden": (VERSION + "(declare-network a (declare-input X float32 [1])\n  (declare-hidden H float32 [4] \"relu_1\")\n"
               + "  (declare-output Y float32 [1]))\n" + BOX + "(assert (<= H[0] 0.0))\n", "line 3", "hidden-layer variable H"),
    "two_inputs": (VERSION + "(declare-network a\n  (declare-input X float32 [1])\n  (declare-input Z float32 [1])\n"
                   + "  (declare-output Y float32 [1]))\n" + BOX, "line 4", "2 input tensors"),
    "two_outputs": (VERSION + "(declare-network a\n  (declare-input X float32 [1])\n  (declare-output Y float32 [1])\n"
                    + "  (declare-output W float32 [1]))\n" + BOX, "line 5", "2 output tensors"),
    "integer_input": (VERSION + "(declare-network a\n  (declare-input X int8 [1])\n  (declare-output Y float32 [1]))\n"
                      + "(assert (and (>= X[0] 0) (<= X[0] 1)))\n(assert (<= Y[0] 0.5))\n", "line 3", "element type I8"),
    "product": (VERSION + "(declare-network a (declare-input X float32 [1]) (declare-output Y float32 [2]))\n"
                + BOX + "(assert (<= (* Y[0] Y[1]) 1.0))\n", "line 5", "not linear"),
    "input_polytope": (VERSION + "(declare-network a (declare-input X float32 [2]) (declare-output Y float32 [1]))\n"
                       + "(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))\n"
                       + "(assert (<= (+ X[0] X[1]) 1.0))\n(assert (<= Y[0] 0.5))\n", "line 4", "only bounds on one X"),
    "input_and_output": (ONE_BY_ONE + BOX + "(assert (<= X[0] Y[0]))\n", "line 5", "mixes inputs (X) and outputs (Y)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_2_0_is_one_line(vnnlib_package, tmp_path: Path, case: str) -> None:
    text, place, reason = REFUSED[case]
    path = tmp_path / f"{case}.vnnlib"
    path.write_text(text)
    with pytest.raises(UnsupportedError) as caught:
        parse_vnnlib(path)
    assert_one_line(caught.value, str(path), place, reason)


MALFORMED = {  # text, words in the message
    "syntax": (ONE_BY_ONE + "(assert (<= Y[0] 1e-3))\n", ("line 3, column", "syntax error")),
    "unclosed": (VERSION + "(declare-network a (declare-input X float32 [1]\n", ("syntax error at the end",)),
    "undeclared": (ONE_BY_ONE + BOX + "(assert (<= Z[0] 1.0))\n", ("line 5", "Undeclared variable 'Z'")),
    "out_of_bounds": (ONE_BY_ONE + BOX + "(assert (<= Y[3] 1.0))\n", ("line 5", "out of bounds")),
    "negative_index": (ONE_BY_ONE + BOX + "(assert (<= Y[-1] 1.0))\n", ("line 5", "index [-1] of Y is outside its shape [1]")),
    "huge_number": (ONE_BY_ONE + BOX + "(assert (<= Y[0] 1" + "0" * 400 + ".0))\n", ("out of the float64 range",)),
    "missing_bound": (VERSION + "(declare-network a\n  (declare-input X float32 [2])\n  (declare-output Y float32 [1]))\n"
                      + BOX, ("line 3", "X[1] has no lower bound")),
    "empty_box": (ONE_BY_ONE + "(assert (and (>= X[0] 1.0)\n  (<= X[0] 0.0)))\n(assert (<= Y[0] 0.5))\n",
                  ("line 3", "empty input box", "at line 4")),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_2_0_is_one_line(vnnlib_package, tmp_path: Path, case: str) -> None:
    text, words = MALFORMED[case]
    path = tmp_path / f"{case}.vnnlib"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        parse_vnnlib(path)
    assert_one_line(caught.value, str(path), *words)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vnnlib", None)  # import vnnlib now raises ImportError
    path = tmp_path / "query.vnnlib"
    path.write_text(ONE_BY_ONE + BOX)
    with pytest.raises(InputError) as caught:
        parse_vnnlib(path)
    assert_one_line(caught.value, str(path), "pip install 'verirepair[vnnlib2]'")


def test_version_rule_leaves_1_0_files_to_our_parser(monkeypatch: pytest.MonkeyPatch, benchmarks: Path) -> None:
    monkeypatch.setitem(sys.modules, "vnnlib", None)  # a 1.0 file must not need the package
    spec = parse_vnnlib(benchmarks / "acasxu" / "vnnlib" / "prop_1.vnnlib")
    assert (spec.n_inputs, spec.n_outputs) == (5, 5)


def test_instance_list_naming_uncompressed_files_finds_their_gzip(benchmarks: Path, tmp_path: Path) -> None:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "vnnlib").mkdir()
    network = benchmarks / "acasxu" / "onnx" / "ACASXU_run2a_2_1_batch_2000.onnx"
    spec = benchmarks / "acasxu" / "vnnlib" / "prop_2.vnnlib"
    gzip_copy(network, tmp_path / "onnx")
    plain_spec = tmp_path / "vnnlib" / spec.name
    plain_spec.write_bytes(spec.read_bytes())
    gzip_copy(spec, tmp_path / "vnnlib")  # both exist: the uncompressed file is the one named
    listing = tmp_path / "instances.csv"
    listing.write_text(f"onnx/{network.name},vnnlib/{spec.name},60\n")
    (instance,) = read_instances(listing)
    assert instance.onnx == tmp_path / "onnx" / (network.name + ".gz")
    assert instance.vnnlib == plain_spec
    assert instance.key == (f"onnx/{network.name}", f"vnnlib/{spec.name}")
    assert load_network(instance.onnx).n_inputs == parse_vnnlib(instance.vnnlib).n_inputs == 5


def test_real_typed_query_of_the_standard_reads(vnnlib_package) -> None:
    bounds = "".join(f"(assert (>= X[0,{i}] 0.0))\n(assert (<= X[0,{i}] 1.0))\n" for i in range(10))
    text = ("(vnnlib-version <2.0>)\n(declare-network myNetwork\n  (declare-input X Real [1,10])\n"
            + "  (declare-output Y Real [1,2]))\n" + bounds + "(assert (<= Y[0,1] 0.5))\n")
    spec = parse_vnnlib_text(text, "real.vnnlib")
    assert (spec.n_inputs, spec.n_outputs, len(spec.regions)) == (10, 2, 1)
    (clause,) = spec.regions[0].clauses
    np.testing.assert_array_equal(clause.A, [[0.0, 1.0]])
    np.testing.assert_array_equal(clause.b, [0.5])
