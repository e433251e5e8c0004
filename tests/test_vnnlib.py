"""VNN-LIB reader/writer: real benchmarks, a z3 oracle, random formulas, errors, round trips."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import z3

from verirepair.errors import InputError, UnsupportedError
from verirepair.spec import Spec, parse_vnnlib, parse_vnnlib_text, vnnlib_text, write_vnnlib

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
ACASXU = BENCHMARKS / "acasxu" / "vnnlib"
MNIST_FC = BENCHMARKS / "mnist_fc" / "vnnlib"


def needs_benchmarks() -> None:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS}")


def declarations(n_inputs: int, n_outputs: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n_inputs)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(n_outputs))


# ----- real benchmarks -----------------------------------------------------------------------------
def test_every_benchmark_file_parses() -> None:
    needs_benchmarks()
    files = sorted(BENCHMARKS.rglob("*.vnnlib"))
    assert files, "no .vnnlib files under the benchmark folder"
    for path in files:
        spec = parse_vnnlib(path)
        assert spec.source == str(path)
        assert spec.regions, path
        for region in spec.regions:
            assert region.box.dim == spec.n_inputs
            assert np.all(np.isfinite(region.box.lower)) and np.all(region.box.lower <= region.box.upper)
            assert all(clause.A.shape[1] == spec.n_outputs for clause in region.clauses)


def test_acasxu_counts() -> None:
    needs_benchmarks()
    prop_6 = parse_vnnlib(ACASXU / "prop_6.vnnlib")
    assert len(prop_6.regions) == 2 and [len(r.clauses) for r in prop_6.regions] == [4, 4]
    # (<= Y_1 Y_0) is the row e_1 - e_0 <= 0
    first = prop_6.regions[0].clauses[0]
    assert first.A.tolist() == [[-1.0, 1.0, 0.0, 0.0, 0.0]] and first.b.tolist() == [0.0]

    prop_1 = parse_vnnlib(ACASXU / "prop_1.vnnlib", n_inputs=5, n_outputs=5)
    assert len(prop_1.regions) == 1 and len(prop_1.regions[0].clauses) == 1
    clause = prop_1.regions[0].clauses[0]
    assert clause.A.tolist() == [[-1.0, 0.0, 0.0, 0.0, 0.0]]
    assert clause.b.tolist() == [-3.991125645861615]  # (>= Y_0 3.99..) is -y_0 <= -3.99..
    assert prop_1.regions[0].box.lower.tolist() == [0.6, -0.5, -0.5, 0.45, -0.5]
    assert prop_1.regions[0].box.upper.tolist() == [0.679857769, 0.5, 0.5, 0.5, -0.45]


def test_mnist_counts() -> None:
    needs_benchmarks()
    files = sorted(MNIST_FC.glob("*.vnnlib"))
    assert files
    for path in files:
        spec = parse_vnnlib(path, n_inputs=784, n_outputs=10)
        assert len(spec.regions) == 1 and len(spec.regions[0].clauses) == 9
        assert all(clause.A.shape == (1, 10) for clause in spec.regions[0].clauses)


def test_mnist_parse_time_uncached() -> None:
    needs_benchmarks()
    path = sorted(MNIST_FC.glob("*.vnnlib"))[0]
    text = path.read_text()
    start = time.perf_counter()
    spec = parse_vnnlib_text(text, str(path), use_cache=False)
    elapsed = time.perf_counter() - start
    assert spec.n_inputs == 784
    assert elapsed < 1.0, f"parsing {path.name} took {elapsed:.3f} s"


# ----- z3 as the oracle ------------------------------------------------------------------------------
def exact(value: float) -> str:
    """The shortest decimal that reads back as ``value``: a boundary point taken from a literal
    in the file is then exactly that literal for z3, as it is for the parser (up to rounding)."""
    return format(Decimal(repr(float(value))), "f")


class Z3Oracle:
    def __init__(self, text: str, n_inputs: int, n_outputs: int) -> None:
        self.formula = z3.And(*z3.parse_smt2_string(text))
        self.xs = [z3.Real(f"X_{i}") for i in range(n_inputs)]
        self.ys = [z3.Real(f"Y_{j}") for j in range(n_outputs)]

    def violated(self, x: np.ndarray, y: np.ndarray) -> bool:
        pairs = [(var, z3.RealVal(exact(v))) for var, v in zip(self.xs + self.ys, [*x, *y])]
        result = z3.simplify(z3.substitute(self.formula, *pairs))
        assert z3.is_true(result) or z3.is_false(result), result
        return z3.is_true(result)


NEAR = 1e-6
"""Offset of the near-boundary samples: far above float rounding (~1e-15 here), so a strict and
a non-strict reading of the same atom agree on every sample, yet far below any shift worth catching."""


def sample_points(spec: Spec, rng: np.random.Generator, count: int, y_scale: float):
    """Points in or around a region's box (some on a face, some just off one) with outputs that
    are random or just either side of one of the region's output constraints."""
    for _ in range(count):
        region = spec.regions[rng.integers(len(spec.regions))]
        box = region.box
        x = rng.uniform(box.lower, box.upper)
        on_face = rng.random(box.dim) < 0.2
        x[on_face] = np.where(rng.random(box.dim) < 0.5, box.lower, box.upper)[on_face]
        if rng.random() < 0.4:
            i = rng.integers(box.dim)
            off = NEAR * (1 + abs(box.upper[i])) if rng.random() < 0.5 else rng.uniform(0, 0.1)
            x[i] = box.lower[i] - off if rng.random() < 0.5 else box.upper[i] + off
        y = rng.uniform(-y_scale, y_scale, spec.n_outputs)
        clause = region.clauses[rng.integers(len(region.clauses))]
        if clause.A.shape[0] and rng.random() < 0.6:
            row = rng.integers(clause.A.shape[0])
            a, target = clause.A[row], clause.b[row] + rng.choice([-NEAR, NEAR])
            y = y + (target - a @ y) / (a @ a) * a  # a @ y == target, up to rounding
        yield x, y


def check_against_z3(text: str, spec: Spec, points: int, seed: int) -> list[bool]:
    oracle = Z3Oracle(text, spec.n_inputs, spec.n_outputs)
    y_scale = 1.0 + max(float(np.max(np.abs(c.b), initial=0.0)) for r in spec.regions for c in r.clauses)
    answers = []
    for x, y in sample_points(spec, np.random.default_rng(seed), points, y_scale):
        expected = oracle.violated(x, y)
        assert spec.violation_at(x, y) == expected, (spec.source, x.tolist(), y.tolist())
        answers.append(expected)
    return answers


def benchmark_sample() -> list[Path]:
    needs_benchmarks()
    files = [ACASXU / f"prop_{k}.vnnlib" for k in range(1, 11)]
    files += sorted(MNIST_FC.glob("*.vnnlib"))[:1] + sorted((BENCHMARKS / "eran" / "vnnlib").glob("*.vnnlib"))[:1]
    return files


def test_benchmarks_agree_with_z3() -> None:
    answers = []
    for seed, path in enumerate(benchmark_sample()):
        text = path.read_text()
        answers += check_against_z3(text, parse_vnnlib(path), 40 if "acasxu" in str(path) else 12, seed)
    assert True in answers and False in answers  # both outcomes were exercised


# Random VNN-LIB texts. A formula is a nested tuple rendered twice: once with numbers in varied
# spellings for the parser, once in plain SMT-LIB decimals for z3.
def render(node: tuple, number) -> str:
    kind = node[0]
    if kind == "num":
        return number(node[1])
    if kind == "var":
        return node[1]
    return "(" + " ".join([kind, *(render(child, number) for child in node[1:])]) + ")"


def plain(value: Decimal) -> str:
    return str(value)


def varied(rng: random.Random):
    def spell(value: Decimal) -> str:
        sign = "-" if value < 0 else rng.choice(["", "+"])
        magnitude = abs(value)
        forms = [str(magnitude), f"{magnitude:e}", f"{magnitude:E}", f"{magnitude * 10}e-1"]
        if 0 < magnitude < 1:
            forms.append(str(magnitude).lstrip("0"))  # ".25"
        if magnitude == magnitude.to_integral_value():
            forms += [f"{int(magnitude)}.", f"{int(magnitude)}"]
        text = rng.choice(forms)
        if value < 0 and rng.random() < 0.3:
            return f"(- {text})"
        return sign + text
    return spell


def random_property(rng: random.Random) -> tuple[list[tuple], int, int]:
    n_in, n_out = rng.randint(1, 4), rng.randint(1, 4)
    dec = lambda: Decimal(rng.randint(-1500, 1500)) / 1000  # noqa: E731
    mids = [dec() for _ in range(n_in)]
    num = lambda v: ("num", v)  # noqa: E731
    x = lambda i: ("var", f"X_{i}")  # noqa: E731
    y = lambda j: ("var", f"Y_{j}")  # noqa: E731

    def box() -> tuple:
        atoms = []
        for i, mid in enumerate(mids):
            lo, hi = mid - abs(dec()) * rng.choice([0, 1]), mid + abs(dec()) * rng.choice([0, 1])
            if lo == hi and rng.random() < 0.5:
                atoms.append(("=", x(i), num(lo)))
            else:
                atoms += [rng.choice([("<=", x(i), num(hi)), (">=", num(hi), x(i))]),
                          rng.choice([(">=", x(i), num(lo)), ("<=", num(lo), x(i))])]
        rng.shuffle(atoms)
        return ("and", *atoms)

    def x_leaf() -> tuple:  # tightening bounds keep lower <= mid <= upper, so boxes stay non-empty
        i = rng.randrange(n_in)
        if rng.random() < 0.5:
            c = num(mids[i] + abs(dec()))
            return rng.choice([("<=", x(i), c), (">=", c, x(i))])
        c = num(mids[i] - abs(dec()))
        return rng.choice([(">=", x(i), c), ("<=", c, x(i))])

    def y_leaf() -> tuple:
        op = rng.choice(["<=", ">=", "<", ">"])
        a, b = rng.randrange(n_out), rng.randrange(n_out)
        choices = [(op, y(a), num(dec())), (op, num(dec()), y(a)), (op, ("*", num(dec() or Decimal(1)), y(a)), num(dec())),
                   (op, ("+", y(a), ("*", num(dec()), y(b))), num(dec()))]
        if a != b:
            choices += [(op, y(a), y(b)), (op, ("-", y(a), y(b)), num(dec()))]
        return rng.choice(choices)

    def formula(depth: int) -> tuple:
        if depth == 0 or rng.random() < 0.35:
            return x_leaf() if rng.random() < 0.3 else y_leaf()
        return (rng.choice(["and", "or"]), *(formula(depth - 1) for _ in range(rng.randint(1, 3))))

    if rng.random() < 0.5:
        base = [box()]
    else:
        base = [("or", *(box() for _ in range(rng.randint(2, 3))))]
    asserts = base + [formula(3) for _ in range(rng.randint(1, 3))]
    rng.shuffle(asserts)
    return asserts, n_in, n_out


@pytest.mark.parametrize("seed", range(40))
def test_random_properties_agree_with_z3(seed: int) -> None:
    rng = random.Random(seed)
    asserts, n_in, n_out = random_property(rng)
    head = declarations(n_in, n_out)
    ours = head + "".join(f"(assert {render(a, varied(rng))}) ; note\n" for a in asserts)
    for_z3 = head + "".join(f"(assert {render(a, plain)})\n" for a in asserts)
    spec = parse_vnnlib_text(ours, f"random-{seed}")
    assert (spec.n_inputs, spec.n_outputs) == (n_in, n_out)
    answers = check_against_z3(for_z3, spec, 60, seed)
    assert len(answers) == 60


# ----- number forms, operators, semantics -------------------------------------------------------------
@pytest.mark.parametrize("literal, value", [
    ("1", 1.0), ("-1.5", -1.5), ("1e-3", 1e-3), ("+2.", 2.0), (".5", 0.5), ("-1.2E+04", -12000.0),
    ("(- 3)", -3.0), ("(- 0 -2)", 2.0), ("(* 2 1.5)", 3.0), ("(/ 1 4)", 0.25), ("(+ 1 2 3)", 6.0)])
def test_number_forms(literal: str, value: float) -> None:
    spec = parse_vnnlib_text(declarations(1, 1) + f"(assert (<= X_0 {literal}))(assert (>= X_0 -1e6))",
                             use_cache=False)
    assert spec.regions[0].box.upper.tolist() == [value]


def test_operators_and_strictness() -> None:
    text = declarations(2, 2) + """
        (assert (= X_0 0.25))                   ; equality is two bounds
        (assert (< -1 X_1 2))                   ; chain, strict: an open interval
        (assert (or (and (> (* 2 Y_0) (+ Y_1 1))) (<= (- Y_0 Y_1) (- 3))))
    """
    spec = parse_vnnlib_text(text, use_cache=False)
    (region,) = spec.regions
    assert region.box.lower.tolist() == [0.25, -1.0] and region.box.upper.tolist() == [0.25, 2.0]
    assert [c.A.tolist() for c in region.clauses] == [[[-2.0, 1.0]], [[1.0, -1.0]]]
    assert [c.b.tolist() for c in region.clauses] == [[-1.0], [-3.0]]
    assert region.box.open_lower.tolist() == [False, True] and region.box.open_upper.tolist() == [False, True]
    assert [c.strict.tolist() for c in region.clauses] == [[True], [False]]
    # strict atoms hold only strictly: the boundary of the box and of the strict row are not unsafe
    assert spec.violation_at([0.25, 1.0], [1.0, 0.5])
    assert not spec.violation_at([0.25, 1.0], [1.0, 1.0])  # 2·Y_0 = Y_1 + 1 exactly
    assert not spec.violation_at([0.25, 2.0], [1.0, 0.5])  # X_1 = 2 lies outside (< -1 X_1 2)
    assert spec.violation_at([0.25, 1.0], [-3.0, 0.0])  # the non-strict row holds at equality


@pytest.mark.parametrize("text, reason", [
    ("(assert (< X_0 1))(assert (>= X_0 1))", "empty input box"),
    ("(assert (<= X_0 1))(assert (> X_0 1))", "empty input box"),
])
def test_strict_bounds_that_meet_are_an_empty_box(text: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        parse_vnnlib_text(declarations(1, 1) + text + "(assert (<= Y_0 0))", use_cache=False)


def test_strict_atoms_survive_a_write_and_read_back() -> None:
    text = declarations(2, 1) + "(assert (< -1 X_0 2))(assert (<= 0 X_1 1))(assert (> Y_0 4.5))"
    spec = parse_vnnlib_text(text, use_cache=False)
    again = parse_vnnlib_text(vnnlib_text(spec), use_cache=False)
    (first,), (second,) = spec.regions, again.regions
    assert second.box.open_lower.tolist() == first.box.open_lower.tolist() == [True, False]
    assert second.box.open_upper.tolist() == first.box.open_upper.tolist() == [True, False]
    assert second.clauses[0].strict.tolist() == first.clauses[0].strict.tolist() == [True]


def test_conjunction_without_outputs_is_always_violated() -> None:
    spec = parse_vnnlib_text(declarations(1, 2) + "(assert (<= 0 X_0 1))", use_cache=False)
    assert spec.regions[0].clauses[0].A.shape == (0, 2)
    assert spec.violation_at([0.5], [123.0, -4.0]) and not spec.violation_at([2.0], [0.0, 0.0])


def test_cache_is_keyed_by_content_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "p.vnnlib"
    path.write_text(declarations(1, 1) + "(assert (<= 0 X_0 1))")
    first = parse_vnnlib(path)
    assert parse_vnnlib(path) is first
    with pytest.raises(ValueError):
        first.regions[0].box.lower[0] = 5.0
    path.write_text(declarations(1, 1) + "(assert (<= 0 X_0 2))")
    assert parse_vnnlib(path).regions[0].box.upper.tolist() == [2.0]


# ----- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, fragment, place", [
    ("(assert (<= X_0 1)\n", "never closed", "line 5, column 1"),
    ("(assert (<= X_0 1)))\n", "unbalanced ')'", "line 5, column 20"),
    ("(assert (<= X_0 1))\n(assert (>= X_7 0))\n", "undeclared variable X_7", "line 6, column 13"),
    ("(assert (<= X_0 1))\n", "X_0 has no lower bound", "line 2, column 16"),
    ("(assert (<= X_0 1))\n(assert (>= X_0 2))\n", "empty input box", "line 6, column 9"),
    ("(assert (<= 0 X_0 1))\n(assert (<= X_0 Y_0))\n", "mixes inputs (X) and outputs (Y)", "line 6, column 9"),
    ("(assert (<= 0 X_0 1))\n(assert (<= (+ X_0 X_0) Y_0 1))\n", "mixes", "line 6, column 9"),
    ("(assert (<= 0 X_0 1))\n(assert (implies Y_0 Y_1))\n", "unknown operator 'implies'", "line 6, column 9"),
    ("(assert (<= 0 X_0 1))\n(assert (<= Y_0 foo))\n", "unknown symbol 'foo'", "line 6, column 17"),
    ("(assert (<= 0 X_0 1))\n(assert (<= (* Y_0 Y_1) 1))\n", "not linear", "line 6, column 13"),
    ("(declare-const Z Real)\n", "must be named X_<i>", "line 5, column 16"),
    ("(declare-const X_2 Real)\n", "X_2 is declared but X_1 is not", "line 5, column 16"),
    ("(declare-const X_0 Real)\n", "X_0 is declared twice", "line 5, column 16"),
    ("(assert (<= 0 X_0 1))\n(assert (<= 0 1e999))\n", "out of the float64 range", "line 6, column 15"),
])
def test_errors_name_file_line_and_column(tmp_path: Path, body: str, fragment: str, place: str) -> None:
    path = tmp_path / "broken.vnnlib"
    path.write_text("; header\n" + declarations(1, 2) + body)
    with pytest.raises(InputError) as caught:
        parse_vnnlib(path)
    message = str(caught.value)
    assert str(path) in message and "line" in message, message
    assert fragment in message and place in message, message
    assert "\n" not in message


def test_general_linear_input_constraint_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "linear.vnnlib"
    path.write_text(declarations(2, 1) + "(assert (<= 0 X_0 1))\n(assert (<= 0 X_1 1))\n"
                    "(assert (<= (+ X_0 X_1) 1))\n")
    with pytest.raises(UnsupportedError, match=r"linear.vnnlib:line 6, column 9: general linear"):
        parse_vnnlib(path)


def test_dnf_blow_up_is_rejected() -> None:
    pairs = " ".join(f"(or (<= Y_0 {k}) (>= Y_0 {k}))" for k in range(17))  # 2**17 conjunctions
    with pytest.raises(InputError, match="would exceed 100000 conjunctions"):
        parse_vnnlib_text(declarations(1, 1) + f"(assert (<= 0 X_0 1))(assert (and {pairs}))", "big")


def test_deep_nesting_is_an_input_error() -> None:
    deep = "(and " * 2000 + "(<= Y_0 0)" + ")" * 2000
    with pytest.raises(InputError, match="nested deeper"):
        parse_vnnlib_text(declarations(1, 1) + f"(assert (<= 0 X_0 1))(assert {deep})", "deep")


def test_missing_file_and_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.vnnlib: no such file"):
        parse_vnnlib(tmp_path / "nope.vnnlib")
    path = tmp_path / "small.vnnlib"
    path.write_text(declarations(1, 2) + "(assert (<= 0 X_0 1))")
    assert parse_vnnlib(path, n_inputs=1, n_outputs=2).n_inputs == 1
    with pytest.raises(InputError, match=r"small\.vnnlib: the property declares 1 inputs but the network has 784"):
        parse_vnnlib(path, n_inputs=784)
    with pytest.raises(InputError, match=r"declares 2 outputs but the network has 10"):
        parse_vnnlib(path, n_outputs=10)


# ----- writing ------------------------------------------------------------------------------------------
def assert_same_spec(a: Spec, b: Spec) -> None:
    assert (a.n_inputs, a.n_outputs, len(a.regions)) == (b.n_inputs, b.n_outputs, len(b.regions))
    for ra, rb in zip(a.regions, b.regions):
        assert np.array_equal(ra.box.lower, rb.box.lower) and np.array_equal(ra.box.upper, rb.box.upper)
        assert len(ra.clauses) == len(rb.clauses)
        for ca, cb in zip(ra.clauses, rb.clauses):
            assert np.array_equal(ca.A, cb.A) and np.array_equal(ca.b, cb.b)


def test_round_trip_random(tmp_path: Path) -> None:
    for seed in range(20):
        rng = random.Random(seed)
        asserts, n_in, n_out = random_property(rng)
        text = declarations(n_in, n_out) + "".join(f"(assert {render(a, plain)})\n" for a in asserts)
        spec = parse_vnnlib_text(text, use_cache=False)
        path = tmp_path / f"r{seed}.vnnlib"
        write_vnnlib(spec, path)
        written = path.read_text()
        assert_same_spec(parse_vnnlib_text(written, use_cache=False), spec)
        check_against_z3(written, spec, 10, seed)  # the written text is plain SMT-LIB, too
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"r{s}.vnnlib" for s in range(20))


def test_round_trip_benchmarks(tmp_path: Path) -> None:
    for path in benchmark_sample():
        spec = parse_vnnlib(path)
        target = tmp_path / path.name
        write_vnnlib(spec, target)
        assert_same_spec(parse_vnnlib(target), spec)
