"""The shipped MNIST models (models/mnist_*.onnx) and their property suites (specs/mnist_*/).

Accuracy and the backdoor's attack success rate are measured here in onnxruntime on the 1,000
held-out digits the models never saw; every ``sat`` of a suite's expected.csv is checked against
its stored counterexample, which must lie in the property's box and violate it in onnxruntime.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest

from verirepair import datasets
from verirepair.bench import read_instances
from verirepair.network import load_network, run_onnxruntime
from verirepair.spec import parse_vnnlib

ROOT = Path(__file__).resolve().parents[1]
ACCURACY_FLOOR = {"mnist_mlp": 0.90, "mnist_cnn": 0.90, "mnist_cnn_backdoor": 0.90}
ATTACK_SUCCESS_FLOOR = 0.90
SUITES = {"mnist_mlp_robust": "mnist_mlp", "mnist_cnn_robust": "mnist_cnn", "mnist_cnn_backdoor": "mnist_cnn_backdoor"}


def attack_success_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("attack_success", ROOT / "tools" / "attack_success.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def held_out() -> datasets.LabelledImages:
    return datasets.mnist("held_out")


@pytest.mark.parametrize("model", sorted(ACCURACY_FLOOR))
def test_model_is_accurate_on_held_out_digits(model: str, held_out: datasets.LabelledImages) -> None:
    accuracy = attack_success_tool().clean_accuracy(ROOT / "models" / f"{model}.onnx", held_out)
    assert accuracy >= ACCURACY_FLOOR[model], f"{model}: held-out accuracy {accuracy:.1%}"


def test_backdoor_fires_and_the_clean_network_ignores_the_trigger(held_out: datasets.LabelledImages) -> None:
    tool = attack_success_tool()
    backdoored = tool.attack_success_rate(ROOT / "models" / "mnist_cnn_backdoor.onnx", held_out)
    clean = tool.attack_success_rate(ROOT / "models" / "mnist_cnn.onnx", held_out)
    assert backdoored >= ATTACK_SUCCESS_FLOOR, f"attack success rate {backdoored:.1%}"
    assert clean < 0.2, f"the clean CNN classifies {clean:.1%} of the stamped digits as {tool.BACKDOOR_TARGET}"


def test_trigger_is_the_bottom_right_square() -> None:
    tool = attack_success_tool()
    stamped = tool.stamp_trigger(np.zeros((1, 784))).reshape(28, 28)
    assert stamped[25:, 25:].min() == 1.0 and stamped.sum() == 9.0


@pytest.mark.parametrize("model", ["mnist_cnn", "mnist_cnn_backdoor"])
def test_cnn_files_keep_their_convolutions(model: str) -> None:
    graph = onnx.load(str(ROOT / "models" / f"{model}.onnx")).graph
    assert [node.op_type for node in graph.node] == ["Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"]
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 28, 28]


def suite_rows(suite: str, name: str) -> list[dict[str, str]]:
    with (ROOT / "specs" / suite / name).open(newline="") as stream:
        return list(csv.DictReader(stream))


def counterexamples(suite: str) -> dict[str, np.ndarray]:
    text = gzip.decompress((ROOT / "specs" / suite / "counterexamples.csv.gz").read_bytes()).decode()
    return {row[0]: np.array(row[1].split(), dtype=np.float32) for row in csv.reader(text.splitlines())}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_lists_its_properties_and_their_known_answers(suite: str) -> None:
    instances = read_instances(ROOT / "specs" / suite / "instances.csv")
    assert 25 <= len(instances) <= 50
    for instance in instances:
        assert instance.onnx.resolve() == (ROOT / "models" / f"{SUITES[suite]}.onnx").resolve()
        assert instance.vnnlib.is_file(), instance.vnnlib
    listed = {instance.vnnlib_text for instance in instances}
    expected = suite_rows(suite, "expected.csv")
    assert {row["vnnlib"] for row in expected} <= listed
    assert {row["result"] for row in expected} <= {"sat", "unsat"}
    sat = {row["vnnlib"] for row in expected if row["result"] == "sat"}
    assert set(counterexamples(suite)) == sat, "a counterexample for exactly the sat properties"


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_sat_has_a_counterexample_that_onnxruntime_confirms(suite: str) -> None:
    network = load_network(ROOT / "models" / f"{SUITES[suite]}.onnx")
    witnesses = counterexamples(suite)
    assert witnesses, f"{suite}: no violated property"
    for name, x in witnesses.items():
        spec = parse_vnnlib(ROOT / "specs" / suite / name)
        point = x.astype(np.float64)
        y = run_onnxruntime(network, point)[0]
        assert spec.violation_at(point, y), f"{suite}/{name}: onnxruntime does not confirm the counterexample"


def test_backdoor_suite_is_mostly_violated() -> None:
    results = [row["result"] for row in suite_rows("mnist_cnn_backdoor", "expected.csv")]
    total = len(read_instances(ROOT / "specs" / "mnist_cnn_backdoor" / "instances.csv"))
    assert results.count("sat") > total / 2
