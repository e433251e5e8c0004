"""The certificate checker's own VNN-LIB 1.0 reader, for box inputs and linear output constraints.

It reads ``declare-const`` of ``X_i``/``Y_i`` and ``assert`` of ``and``/``or`` over comparisons
(``<= >= < >``) of linear terms (numbers, variables, ``+``, ``-``, ``*`` by a number). The asserted
formula is put in disjunctive normal form; each conjunction is an input box (bounds on single
``X_i``) and an output clause (rows ``a·y <= b``: the output violates the property where all rows
hold; a strict row is read as non-strict, which only adds points). Conjunctions with the same box
form one region, in order of first appearance, each distinct clause once: the order the
certificate format numbers regions, clauses and rows by.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VARIABLE = re.compile(r"([XY])_(\d+)\Z")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
COMPARISONS = ("<=", ">=", "<", ">")
MAX_CONJUNCTIONS = 100_000


class UnsupportedProperty(Exception):
    """The property is not one this reader represents (the message says why)."""


@dataclass(frozen=True)
class Region:
    lower: np.ndarray  # input box, float64
    upper: np.ndarray
    clauses: tuple[tuple[np.ndarray, np.ndarray], ...]  # (A [rows, n_outputs], b [rows])


@dataclass(frozen=True)
class Property:
    n_inputs: int
    n_outputs: int
    regions: tuple[Region, ...]


Linear = tuple[dict[tuple[str, int], float], float]  # coefficients per variable, constant
Atom = tuple[str, int, float] | tuple[str, tuple[tuple[int, float], ...], float]  # bound | row


def read_property(text: str) -> Property:
    try:
        return _read(text)
    except RecursionError:
        raise UnsupportedProperty("formulas nested too deeply") from None


def _read(text: str) -> Property:
    tokens = _TOKEN.findall(re.sub(r";[^\n]*", "", text))
    expressions, position = [], 0
    while position < len(tokens):
        expression, position = _expression(tokens, position)
        expressions.append(expression)
    declared: dict[str, int] = {"X": 0, "Y": 0}
    asserted: list[list[list[Atom]]] = []
    for expression in expressions:
        if not isinstance(expression, list) or not expression:
            raise UnsupportedProperty(f"unexpected top-level {expression!r}")
        if expression[0] == "declare-const":
            match = _VARIABLE.match(str(expression[1]))
            if not match or int(match[2]) != declared[match[1]]:
                raise UnsupportedProperty(f"declaration {expression[1]} is not the next X_i or Y_i")
            declared[match[1]] += 1
        elif expression[0] == "assert" and len(expression) == 2:
            asserted.append(_formula(expression[1]))
        else:
            raise UnsupportedProperty(f"command {expression[0]} is not read")
    return _property(_conjunction(asserted), declared["X"], declared["Y"])


def _expression(tokens: list[str], position: int):  # type: ignore[no-untyped-def]
    if tokens[position] == ")":
        raise UnsupportedProperty("unbalanced ')'")
    if tokens[position] != "(":
        return tokens[position], position + 1
    items, position = [], position + 1
    while position < len(tokens) and tokens[position] != ")":
        item, position = _expression(tokens, position)
        items.append(item)
    if position >= len(tokens):
        raise UnsupportedProperty("a '(' is never closed")
    return items, position + 1


def _conjunction(parts: list[list[list[Atom]]]) -> list[list[Atom]]:
    """DNF of a conjunction of DNFs: the atoms of the parts that are one conjunction first (in
    order), then the parts that are disjunctions distributed over them, in order."""
    if any(not part for part in parts):
        return []
    result: list[list[Atom]] = [[atom for part in parts if len(part) == 1 for atom in part[0]]]
    for part in parts:
        if len(part) > 1:
            if len(result) * len(part) > MAX_CONJUNCTIONS:
                raise UnsupportedProperty("the disjunctive normal form is too large")
            result = [a + b for a in result for b in part]
    return result


def _formula(node) -> list[list[Atom]]:  # type: ignore[no-untyped-def]
    """DNF: a list of conjunctions (lists of atoms)."""
    if not isinstance(node, list) or not node:
        raise UnsupportedProperty(f"{node!r} is not a formula")
    head, args = node[0], node[1:]
    if head == "and":
        return _conjunction([_formula(arg) for arg in args])
    if head == "or":
        return [conjunction for arg in args for conjunction in _formula(arg)]
    if head in COMPARISONS and len(args) == 2:
        left, right = _term(args[0]), _term(args[1])
        atom = _atom(_difference(left, right) if head in ("<=", "<") else _difference(right, left), head)
        if atom is None:  # always true
            return [[]]
        return [[atom]] if atom is not False else []
    raise UnsupportedProperty(f"formula {head} is not read")


def _term(node) -> Linear:  # type: ignore[no-untyped-def]
    if isinstance(node, str):
        match = _VARIABLE.match(node)
        if match:
            return {(match[1], int(match[2])): 1.0}, 0.0
        if not _NUMBER.match(node):
            raise UnsupportedProperty(f"unknown symbol {node}")
        value = float(node)
        if not math.isfinite(value):
            raise UnsupportedProperty(f"number {node} is not finite in float64")
        return {}, value
    head, args = node[0], [_term(arg) for arg in node[1:]]
    if head == "+" and args:
        return _total(args)
    if head == "-" and len(args) == 1:
        return _times(args[0], -1.0)
    if head == "-" and args:
        return _total([args[0], *(_times(arg, -1.0) for arg in args[1:])])
    if head == "*" and args:
        result = args[0]
        for arg in args[1:]:
            if result[0] and arg[0]:
                raise UnsupportedProperty("a product of two variables is not linear")
            result = _times(arg, result[1]) if not result[0] else _times(result, arg[1])
        return result
    raise UnsupportedProperty(f"term {head} is not read")


def _total(terms: list[Linear]) -> Linear:
    coefficients: dict[tuple[str, int], float] = {}
    constant = 0.0
    for term_coefficients, term_constant in terms:
        constant += term_constant
        for variable, value in term_coefficients.items():
            coefficients[variable] = coefficients.get(variable, 0.0) + value
    return coefficients, constant


def _times(term: Linear, factor: float) -> Linear:
    return {variable: value * factor for variable, value in term[0].items()}, term[1] * factor


def _difference(left: Linear, right: Linear) -> Linear:
    return _total([left, _times(right, -1.0)])


def _atom(linear: Linear, op: str) -> Atom | bool | None:
    """``linear <= 0`` as an input bound ("upper"/"lower", index, value) or an output row
    ("row", coefficients, b); None when always true, False when never."""
    coefficients = {variable: value for variable, value in linear[0].items() if value != 0.0}
    constant = linear[1]
    if not math.isfinite(constant) or not all(math.isfinite(v) for v in coefficients.values()):
        raise UnsupportedProperty("a comparison overflows float64")
    kinds = {kind for kind, _ in coefficients}
    if not kinds:
        holds = constant < 0.0 if op in ("<", ">") else constant <= 0.0
        return None if holds else False
    if kinds == {"Y"}:
        return "row", tuple(sorted((index, value) for (_, index), value in coefficients.items())), -constant
    if len(coefficients) != 1 or kinds != {"X"}:
        raise UnsupportedProperty("only bounds on single inputs and constraints on outputs are read")
    ((_, index), value), = coefficients.items()
    return ("upper" if value > 0 else "lower"), index, -constant / value


def _property(formula: list[list[Atom]], n_inputs: int, n_outputs: int) -> Property:
    if not formula:
        raise UnsupportedProperty("the unsafe set is empty")
    regions: dict[bytes, tuple[np.ndarray, np.ndarray, dict[bytes, tuple[np.ndarray, np.ndarray]]]] = {}
    for conjunction in formula:
        lower, upper = np.full(n_inputs, -np.inf), np.full(n_inputs, np.inf)
        rows: list[tuple[np.ndarray, float]] = []
        for atom in conjunction:
            kind, where, value = atom
            if kind == "row":
                a = np.zeros(n_outputs)
                for index, coefficient in where:  # type: ignore[union-attr]
                    if index >= n_outputs:
                        raise UnsupportedProperty(f"Y_{index} is not declared")
                    a[index] = coefficient
                rows.append((a, float(value)))
                continue
            if where >= n_inputs:  # type: ignore[operator]
                raise UnsupportedProperty(f"X_{where} is not declared")
            if kind == "upper":
                upper[where] = min(upper[where], value)
            else:
                lower[where] = max(lower[where], value)
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))) or np.any(lower > upper):
            raise UnsupportedProperty("an input box is unbounded or empty")
        A = np.array([a for a, _ in rows]).reshape(len(rows), n_outputs)
        b = np.array([v for _, v in rows], dtype=np.float64)
        _, _, clauses = regions.setdefault(lower.tobytes() + upper.tobytes(), (lower, upper, {}))
        clauses.setdefault(A.tobytes() + b.tobytes(), (A, b))
    return Property(n_inputs, n_outputs, tuple(
        Region(lower, upper, _without_redundant(tuple(clauses.values()))) for lower, upper, clauses in regions.values()))


def _without_redundant(clauses: tuple[tuple[np.ndarray, np.ndarray], ...]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """A clause without rows (always violated) makes the others redundant: only it is kept."""
    empty = [clause for clause in clauses if clause[0].shape[0] == 0]
    return tuple(empty[:1]) or clauses
