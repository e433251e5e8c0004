"""HTML reports (``--report FILE.html``): every page kind from a real small run, checked to be
self-contained and rendered by headless Chromium (skipped where Chromium is absent)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from verirepair.cli import main

pytest.importorskip("matplotlib", reason="HTML reports need matplotlib: pip install 'verirepair[report]'")

REPO = Path(__file__).resolve().parents[1]
COLLISION = REPO / "models" / "collision_avoidance.onnx"
DIGITS = REPO / "models" / "digits_classifier.onnx"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def expected(onnx: str, vnnlib: str) -> str:
    with (REPO / "specs" / "expected.csv").open(newline="") as stream:
        return next(row["expected"] for row in csv.DictReader(stream) if (row["onnx"], row["vnnlib"]) == (onnx, vnnlib))


class Document(HTMLParser):
    """What a page refers to: image sources, links, scripts; and its heading texts."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.references: list[str] = []
        self.scripts = 0
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "script":
            self.scripts += 1
        self.references += [v for k, v in attrs if k in ("href", "src") and v and tag != "img"]
        self._in_heading = tag in ("h1", "h2")
        if self._in_heading:
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_heading = self._in_heading and tag not in ("h1", "h2")

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings[-1] += data


def self_contained(path: Path) -> Document:
    """Parse the page and check it needs nothing outside itself."""
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    document = Document()
    document.feed(text)
    document.close()
    assert document.scripts == 0 and document.references == []
    assert all(src.startswith("data:image/png;base64,") for src in document.images)
    return document


def chromium_renders(page: Path, folder: Path, headings: list[str]) -> None:
    """Headless Chromium loads the page, shows the headings and takes a screenshot that is not blank."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium); the page was not rendered")
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={folder / 'chromium-profile'}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for heading in headings:
        assert heading in dom.stdout
    shot = folder / f"{page.stem}.png"
    run = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.01  # more than a blank page: text, tables, figures


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("vnnlib", ["specs/collision_avoidance_close_left.vnnlib", "specs/collision_avoidance_far_coc.vnnlib"])
def test_verify_page_shows_the_verdict_and_renders(vnnlib: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    truth = expected("models/collision_avoidance.onnx", vnnlib)
    page = tmp_path / "verify.html"
    code, _, err = run_cli(["verify", str(COLLISION), str(REPO / vnnlib), "--timeout", "60", "--report", str(page)], capsys)
    assert code == {"sat": 10, "unsat": 0}[truth], err
    document = self_contained(page)
    text = page.read_text()
    assert f'<span class="verdict {"bad" if truth == "sat" else "good"}">{truth}</span>' in text
    assert ("Counterexample" in document.headings) == (truth == "sat")
    chromium_renders(page, tmp_path, ["verirepair verify", truth])


def test_a_report_not_ending_in_html_is_the_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vnnlib = "specs/collision_avoidance_close_left.vnnlib"
    report = tmp_path / "verify.json"
    run_cli(["verify", str(COLLISION), str(REPO / vnnlib), "--timeout", "60", "--report", str(report)], capsys)
    summary = json.loads(report.read_text())
    assert summary["result"] == expected("models/collision_avoidance.onnx", vnnlib)
    witness = onnxruntime.InferenceSession(str(COLLISION)).run(
        None, {"input": np.asarray(summary["counterexample"]["x"], dtype=np.float32).reshape(1, -1)})[0]
    assert np.allclose(witness.reshape(-1), summary["counterexample"]["y"], atol=1e-5)


def repaired_files(folder: Path) -> list[str]:
    """-o and --keep-unproven in ``folder``: a repaired file exists whether or not it is proven."""
    return ["-o", str(folder / "repaired.onnx"), "--keep-unproven", str(folder / "kept.onnx")]


def digits_data(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs, labels = data.data[:300] / 16.0, data.target[:300]
    np.savez(path, X=inputs, y=labels)
    return inputs, labels


def digits_decisions(inputs: np.ndarray, onnx: Path) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(onnx))
    return np.array([session.run(None, {"input": x.astype(np.float32).reshape(1, -1)})[0].argmax() for x in inputs])


def test_repair_page_of_a_classifier_shows_per_class_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Point-wise repair of the digits the shipped classifier gets wrong, with the labelled data set."""
    inputs, labels = digits_data(tmp_path / "digits.npz")
    wrong = np.flatnonzero(digits_decisions(inputs, DIGITS) != labels)
    assert wrong.size > 0
    np.save(tmp_path / "points.npy", inputs[wrong])
    np.save(tmp_path / "labels.npy", labels[wrong].astype(float))
    page = tmp_path / "repair.html"
    code, _, err = run_cli(["repair", str(DIGITS), "--points", str(tmp_path / "points.npy"), "--labels",
                            str(tmp_path / "labels.npy"), "--data", str(tmp_path / "digits.npz"), "--samples", "300",
                            "--budget", "120", *repaired_files(tmp_path), "--report", str(page)], capsys)
    assert code in (0, 20), err
    repaired = tmp_path / ("repaired.onnx" if code == 0 else "kept.onnx")
    document = self_contained(page)
    text = page.read_text()
    assert len(document.images) == 2  # |Δ output| on the domain, per-class accuracy; 64 inputs: no maps
    assert "No decision maps: the network has 64 inputs" in text
    assert "decisions are judged by ranking" in text  # no --decision: the rule is named, never "None"
    accuracy_after = (digits_decisions(inputs, repaired) == labels).mean()
    assert f"accuracy_after</td><td class=\"number\">{accuracy_after:.4g}" in text
    chromium_renders(page, tmp_path, ["What changed", "Time per phase"])


def test_repair_page_of_a_low_dimensional_network_has_decision_maps(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Point-wise repair on the 5-input collision-avoidance model: maps over the domain's widest sides."""
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 5))
    before = onnxruntime.InferenceSession(str(COLLISION)).run(None, {"input": points[:1].astype(np.float32)})[0]
    label = int(before.argmin())  # point-wise repair asks for the arg-max: the lowest score is not it
    np.save(tmp_path / "points.npy", points)
    page = tmp_path / "repair.html"
    code, _, err = run_cli(["repair", str(COLLISION), "--points", str(tmp_path / "points.npy"), "--label", str(label),
                            "--decision", "argmin", "--samples", "300", "--budget", "120",
                            "--lower=-0.5,-0.5,-0.5,-0.5,-0.5", "--upper=0.5,0.5,0.5,0.5,0.5",
                            *repaired_files(tmp_path), "--report", str(page)], capsys)
    assert code in (0, 20), err
    document = self_contained(page)
    text = page.read_text()
    assert len(document.images) == 2  # |Δ output| on the domain, one decision map (one box)
    assert "Box 1: decisions over input 0 × input 1" in text and "ACAS Xu advisory order" in text
    assert "No per-class accuracy: the run had no --data with labels." in text
    chromium_renders(page, tmp_path, ["What changed"])


def test_decision_grid_agrees_with_onnxruntime_point_by_point() -> None:
    from verirepair.htmlreport.repair_figures import MAP_STEPS, decision_grid
    from verirepair.network import load_network
    from verirepair.spec import Box

    network = load_network(COLLISION)
    box = Box(np.full(5, -0.5), np.array([0.5, 0.2, 0.1, 0.0, -0.4]))
    grid = decision_grid(network, network, box, (1, 3), "argmin")
    assert (grid.before == grid.after).all()
    session = onnxruntime.InferenceSession(str(COLLISION))
    for row, column in [(0, 0), (MAP_STEPS - 1, 7), (40, MAP_STEPS - 1), (75, 75)]:
        point = (box.lower + box.upper) / 2
        point[1], point[3] = grid.x_values[column], grid.y_values[row]
        scores = session.run(None, {"input": point.astype(np.float32).reshape(1, -1)})[0]
        assert grid.before[row, column] == scores.argmin()


def test_repair_page_without_a_repaired_file_says_so(tmp_path: Path) -> None:
    from verirepair.htmlreport import FigureSettings, repair_page
    from verirepair.repair import RepairReport

    report = RepairReport(str(COLLISION), str(REPO / "specs/collision_avoidance_close_left.vnnlib"), "reassure",
                          "not-proven", "sat")
    page = tmp_path / "page.html"
    page.write_text(repair_page(report, FigureSettings(100, 0, "argmin")))
    assert self_contained(page).images == []
    assert "No repaired network file exists for this run" in page.read_text()


PEERS = """year,tool,instances,unsat,sat,solved_correct,wrong_vs_ground_truth,timeout,unknown,error,total_time_correct_s,total_time_all_s,median_time_correct_s,official_verified,official_falsified,official_penalty,official_points,official_percent_of_best,official_solved_percent
2024,old_tool,2,1,1,2,0,0,0,0,3.0,3.0,1.5,1,1,0,20,100.0,100.0
2025,tool_a,2,1,1,2,0,0,0,0,2.0,2.0,1.0,1,1,0,20,100.0,100.0
2025,tool_b,2,1,0,1,0,1,0,0,4.0,64.0,4.0,1,0,0,10,50.0,50.0
"""


def test_bench_page_has_the_family_table_a_cactus_plot_and_the_peers(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    rows = [("models/collision_avoidance.onnx", "specs/collision_avoidance_far_coc.vnnlib"),
            ("models/collision_avoidance.onnx", "specs/collision_avoidance_close_left.vnnlib")]
    (suite / "instances.csv").write_text("".join(f"{REPO / o},{REPO / v},60\n" for o, v in rows))
    (suite / "peers_results.csv").write_text(PEERS)
    page = tmp_path / "bench.html"
    code, _, err = run_cli(["bench", str(suite / "instances.csv"), "--out", str(tmp_path / "out"), "--report", str(page)],
                           capsys)
    assert code == 0, err
    document = self_contained(page)
    text = page.read_text()
    assert len(document.images) == 1 and "Peers (2025)" in document.headings
    assert "tool_a" in text and "tool_b" in text and "old_tool" not in text  # the latest year only
    with (tmp_path / "out" / "results.csv").open(newline="") as stream:
        results = {Path(r["vnnlib"]).name: r["result"] for r in csv.DictReader(stream)}
    for onnx, vnnlib in rows:
        assert results[Path(vnnlib).name] == expected(onnx, vnnlib)
        assert f"<td>{Path(vnnlib).name}</td><td>{results[Path(vnnlib).name]}</td>" in text
    chromium_renders(page, tmp_path, ["verirepair bench: suite", "Instances solved against time", "Peers (2025)"])


def test_a_missing_matplotlib_is_one_line_naming_the_extra_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    page = tmp_path / "verify.html"
    code, out, err = run_cli(["verify", str(COLLISION), str(REPO / "specs/collision_avoidance_far_coc.vnnlib"),
                              "--report", str(page)], capsys)
    assert code == 2 and out == "" and not page.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "matplotlib is not installed" in lines[0] and "pip install 'verirepair[report]'" in lines[0]
