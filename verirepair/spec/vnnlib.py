"""Read VNN-LIB 1.0 properties (the SMT-LIB subset used by VNN-COMP); `parse_vnnlib` also reads
VNN-LIB 2.0 queries (`verirepair.spec.vnnlib2`) and gzip-compressed files.

Accepted input::

    file     := command*                  ; comments run from ';' to the end of the line
    command  := (declare-const NAME Real) | (assert formula)
              | (set-logic ..) (set-info ..) (set-option ..) (check-sat) (get-model) (exit)  ; ignored
    formula  := (and formula*) | (or formula*) | (CMP term term+) | true | false
    CMP      := <= | >= | < | > | =       ; chains compare neighbours: (<= a b c) is a<=b and b<=c
    term     := NUMBER | NAME | (+ term+) | (- term+) | (* term+) | (/ term NUMBER+)   ; linear only

NAME is ``X_<i>`` (input) or ``Y_<i>`` (output), indexed 0..n-1. NUMBER is any decimal form
(``1``, ``-1.5``, ``1e-3``, ``+2.``, ``.5``, ``-1.2E+04``).

Semantics: the file describes the *unsafe* set, the conjunction of all asserts. It is
normalised to disjunctive normal form; in each conjunction the input atoms give a box and the
output atoms give one `Clause` ``A·y <= b``; conjunctions with the same box share a `Region`.

Strict comparisons ``<``/``>`` are kept: an input bound makes its side of the box open
(`Box.open_lower`/`open_upper`), an output row is marked strict (`Clause.strict`). A witness must
satisfy them strictly (`Box.contains`, `Clause.violated_by`); the proof side reads them as
``<=``/``>=``, which closes the unsafe set (it can only grow), so an ``unsat`` stays sound.

Results are cached by content (see `parse_vnnlib`); their arrays are made read-only because the
same `Spec` object is handed to every caller.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Callable, NamedTuple, NoReturn, Union

import numpy as np

from verirepair.errors import InputError, UnsupportedError
from verirepair.files import read_input_bytes
from verirepair.spec.model import Box, Clause, Region, Spec

MAX_CONJUNCTIONS = 100_000
"""Largest disjunctive normal form built; a bigger one is rejected rather than exhausting memory."""
MAX_DEPTH = 300
"""Deepest nesting of a formula or term; keeps the recursive descent clear of Python's stack limit."""
CACHE_SIZE = 32
"""Parsed specs kept, keyed by (sha256 of the content, source name)."""

_TOKEN = re.compile(r"[()]|;[^\n]*|[^\s();]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"([XY])_(0|[1-9][0-9]*)")
_COMPARISONS = frozenset({"<=", ">=", "<", ">", "="})
_TERM_OPERATORS = frozenset({"+", "-", "*", "/"})
_IGNORED_COMMANDS = frozenset({"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"})


class _Sym(NamedTuple):
    text: str
    pos: int  # offset into the text; turned into line/column only for error messages


class _List(NamedTuple):
    items: list[_Node]
    pos: int  # offset of the '('


_Node = Union[_Sym, _List]
_Linear = tuple[dict[tuple[str, int], float], float]  # coefficients by (kind, index), constant


class _Bound(NamedTuple):  # X_index <= value when upper, else X_index >= value (< / > when strict)
    index: int
    upper: bool
    value: float
    pos: int
    strict: bool


class _Row(NamedTuple):  # sum(coefs[j] * Y_j) <= b (< when strict)
    coefs: dict[int, float]
    b: float
    strict: bool


_Atom = Union[_Bound, _Row]
_Conj = tuple[_Atom, ...]
_Dnf = list[_Conj]


def _place(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"line {line}, column {column}"


def _read_sexprs(text: str, fail: Callable[[int, str], NoReturn]) -> list[_Node]:
    """Tokenise and group into s-expressions (an explicit stack, so deep nesting cannot overflow)."""
    top: list[_Node] = []
    stack: list[_List] = []
    items = top
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "(":
            node = _List([], match.start())
            items.append(node)
            stack.append(node)
            items = node.items
        elif token == ")":
            if not stack:
                fail(match.start(), "unbalanced ')' without a matching '('")
            stack.pop()
            items = stack[-1].items if stack else top
        elif token[0] != ";":
            items.append(_Sym(token, match.start()))
    if stack:
        fail(stack[-1].pos, f"unexpected end of file ({_place(text, len(text))}): this '(' is never closed")
    return top


def _sum(terms: list[_Linear]) -> _Linear:
    coefs: dict[tuple[str, int], float] = {}
    const = 0.0
    for term_coefs, term_const in terms:
        const += term_const
        for var, a in term_coefs.items():
            coefs[var] = coefs.get(var, 0.0) + a
    return coefs, const


def _scale(term: _Linear, factor: float) -> _Linear:
    return {var: a * factor for var, a in term[0].items()}, term[1] * factor


def _sub(left: _Linear, right: _Linear) -> _Linear:
    return _sum([left, _scale(right, -1.0)])


class _SpecBuilder(ABC):
    """What every VNN-LIB version shares: linear comparisons turned into input bounds and output
    rows, formulas in disjunctive normal form, and the `Spec` built from it. A reader supplies where
    a position is (`place`) and how input ``i`` is called and declared (`input_name`, `input_pos`)."""

    def __init__(self, source: str) -> None:
        self.source = source

    @abstractmethod
    def place(self, pos: int) -> str | None:
        ...

    @abstractmethod
    def input_name(self, index: int) -> str:
        ...

    @abstractmethod
    def input_pos(self, index: int) -> int:
        ...

    def fail(self, pos: int, reason: str, error: type[InputError] = InputError) -> NoReturn:
        raise error(self.source, self.place(pos), reason)

    def conjoin(self, parts: list[tuple[_Dnf, int]]) -> _Dnf:
        """DNF of a conjunction. Parts that are one conjunction (the usual bounds) are joined once,
        so n of them cost O(n); only genuine disjunctions are distributed."""
        if any(not dnf for dnf, _ in parts):
            return []
        result: _Dnf = [tuple(itertools.chain.from_iterable(dnf[0] for dnf, _ in parts if len(dnf) == 1))]
        for dnf, pos in parts:
            if len(dnf) > 1:
                if len(result) * len(dnf) > MAX_CONJUNCTIONS:
                    self.fail(pos, f"disjunctive normal form would exceed {MAX_CONJUNCTIONS} conjunctions")
                result = [a + b for a in result for b in dnf]
        return result

    def disjoin(self, parts: list[_Dnf], pos: int) -> _Dnf:
        if sum(len(dnf) for dnf in parts) > MAX_CONJUNCTIONS:
            self.fail(pos, f"disjunctive normal form would exceed {MAX_CONJUNCTIONS} conjunctions")
        return [conj for dnf in parts for conj in dnf]

    def compare(self, op: str, left: _Linear, right: _Linear, pos: int) -> _Dnf:
        """DNF of ``left op right`` for op in ``<= >= < > =`` and ``!=`` (``<`` or ``>``)."""
        if op == "!=":
            return self.disjoin([self.compare("<", left, right, pos), self.compare(">", left, right, pos)], pos)
        if op == "=":
            differences = [_sub(left, right), _sub(right, left)]
        else:
            differences = [_sub(left, right) if op in ("<=", "<") else _sub(right, left)]
        atoms: list[_Atom] = []
        for coefs, const in differences:
            atom = self.atom(coefs, const, pos, op in ("<", ">"))
            if atom is False:
                return []
            if atom is not True:
                atoms.append(atom)
        return [tuple(atoms)]

    def atom(self, coefs: dict[tuple[str, int], float], const: float, pos: int, strict: bool) -> _Atom | bool:
        """``sum(coefs·v) + const <= 0`` (``< 0`` when ``strict``) as an input bound or an output row;
        a bool if constant."""
        coefs = {var: a for var, a in coefs.items() if a != 0.0}
        if not math.isfinite(const) or not all(math.isfinite(a) for a in coefs.values()):
            self.fail(pos, "arithmetic overflow in comparison")
        kinds = {kind for kind, _ in coefs}
        if not kinds:
            return const < 0.0 if strict else const <= 0.0
        if len(kinds) == 2:
            self.fail(pos, "comparison mixes inputs (X) and outputs (Y)", UnsupportedError)
        if kinds == {"Y"}:
            return _Row({index: a for (_, index), a in coefs.items()}, -const + 0.0, strict)
        if len(coefs) != 1:
            self.fail(pos, "general linear constraint over inputs; only bounds on one X variable "
                           "are supported", UnsupportedError)
        ((_, index), a), = coefs.items()
        return _Bound(index, a > 0.0, -const / a + 0.0, pos, strict)  # + 0.0 turns -0.0 into 0.0

    def product(self, args: list[_Linear], pos: int) -> _Linear:
        result = args[0]
        for arg in args[1:]:
            if result[0] and arg[0]:
                self.fail(pos, "product of two variables is not linear", UnsupportedError)
            result = _scale(arg, result[1]) if not result[0] else _scale(result, arg[1])
        return result

    def number(self, text: str, pos: int) -> _Linear:
        value = float(text)
        if not math.isfinite(value):
            self.fail(pos, f"number {text} is out of the float64 range")
        return {}, value

    # ----- building the Spec --------------------------------------------------------------------
    def build(self, conjunctions: _Dnf, n_inputs: int, n_outputs: int) -> Spec:
        if not conjunctions:
            raise InputError(self.source, None, "the unsafe set is empty: every disjunct contains "
                                                "a comparison that is always false")
        boxes: dict[tuple[int, ...], Box] = {}  # by identity of the bound atoms (shared after DNF)
        groups: dict[bytes, tuple[Box, dict[bytes, Clause]]] = {}
        for which, conj in enumerate(conjunctions):
            bounds = [atom for atom in conj if isinstance(atom, _Bound)]
            key = tuple(map(id, bounds))
            if key not in boxes:
                boxes[key] = self.box(bounds, n_inputs, which, len(conjunctions))
            box = boxes[key]
            clause = _clause([atom for atom in conj if isinstance(atom, _Row)], n_outputs)
            box_key = b"".join(a.tobytes() for a in (box.lower, box.upper, box.open_lower, box.open_upper))
            _, clauses = groups.setdefault(box_key, (box, {}))
            clauses.setdefault(clause.A.tobytes() + clause.b.tobytes() + clause.strict.tobytes(), clause)
        regions = tuple(Region(box, _simplest(tuple(clauses.values()))) for box, clauses in groups.values())
        return Spec(n_inputs, n_outputs, regions, self.source)

    def box(self, bounds: list[_Bound], n: int, which: int, total: int) -> Box:
        lower, upper = [-math.inf] * n, [math.inf] * n
        lower_at, upper_at = [0] * n, [0] * n
        open_lower, open_upper = [False] * n, [False] * n
        for bound in bounds:
            i = bound.index
            if bound.upper and (bound.value, not bound.strict) < (upper[i], not open_upper[i]):
                upper[i], upper_at[i], open_upper[i] = bound.value, bound.pos, bound.strict
            elif not bound.upper and (bound.value, bound.strict) > (lower[i], open_lower[i]):
                lower[i], lower_at[i], open_lower[i] = bound.value, bound.pos, bound.strict
        where = f" (in disjunct {which + 1} of {total})" if total > 1 else ""
        for i in range(n):
            name = self.input_name(i)
            for value, side in ((lower[i], "lower"), (upper[i], "upper")):
                if math.isinf(value):
                    self.fail(self.input_pos(i), f"{name} has no {side} bound{where}")
            if lower[i] > upper[i] or (lower[i] == upper[i] and (open_lower[i] or open_upper[i])):
                self.fail(lower_at[i], f"empty input box: {name} {'>' if open_lower[i] else '>='} {lower[i]!r} here "
                                       f"but {name} {'<' if open_upper[i] else '<='} {upper[i]!r} at "
                                       f"{self.place(upper_at[i])}{where}")
        return Box(_frozen(np.array(lower)), _frozen(np.array(upper)), _frozen_mask(open_lower), _frozen_mask(open_upper))


class _Parser(_SpecBuilder):
    """VNN-LIB 1.0: recursive descent over the s-expressions of one file; formulas come out in DNF."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(source)
        self.text = text
        self.declared: dict[str, tuple[str, int, int]] = {}  # name -> (kind, index, pos)

    def place(self, pos: int) -> str:
        return _place(self.text, pos)

    def input_name(self, index: int) -> str:
        return f"X_{index}"

    def input_pos(self, index: int) -> int:
        return self.declared[f"X_{index}"][2]

    def parse(self) -> Spec:
        asserts: list[tuple[_Dnf, int]] = []
        for node in _read_sexprs(self.text, self.fail):
            asserts.extend(self.command(node))
        n_inputs, n_outputs = self.count("X"), self.count("Y")
        return self.build(self.conjoin(asserts), n_inputs, n_outputs)

    # ----- commands and declarations -------------------------------------------------------
    def command(self, node: _Node) -> list[tuple[_Dnf, int]]:
        if not isinstance(node, _List):
            self.fail(node.pos, f"expected a command such as (assert ...), found '{node.text}'")
        head = self.head(node)
        if head == "declare-const":
            self.declare(node)
        elif head == "assert":
            if len(node.items) != 2:
                self.fail(node.pos, "assert takes exactly one formula")
            return [(self.formula(node.items[1], 1), node.pos)]
        elif head not in _IGNORED_COMMANDS:
            self.fail(node.pos, f"unknown command '{head}'")
        return []

    def declare(self, node: _List) -> None:
        items = node.items
        if len(items) != 3 or not all(isinstance(item, _Sym) for item in items[1:]):
            self.fail(node.pos, "expected (declare-const NAME Real)")
        name, sort = items[1], items[2]
        if sort.text != "Real":
            self.fail(sort.pos, f"unsupported sort '{sort.text}', only Real", UnsupportedError)
        match = _NAME.fullmatch(name.text)
        if match is None:
            self.fail(name.pos, f"variable '{name.text}' must be named X_<i> (input) or Y_<i> (output)")
        if name.text in self.declared:
            self.fail(name.pos, f"{name.text} is declared twice")
        self.declared[name.text] = (match.group(1), int(match.group(2)), name.pos)

    def count(self, kind: str) -> int:
        """Number of ``kind`` variables, checking they are exactly ``kind_0 .. kind_{n-1}``."""
        where = {index: pos for k, index, pos in self.declared.values() if k == kind}
        if not where:
            raise InputError(self.source, None, f"no {kind} variables declared ({kind}_0, {kind}_1, ...)")
        n = len(where)
        if max(where) != n - 1:
            missing = next(i for i in range(n) if i not in where)
            extra = max(where)
            self.fail(where[extra], f"{kind}_{extra} is declared but {kind}_{missing} is not "
                                    "(indices must run 0..n-1)")
        return n

    def head(self, node: _List) -> str:
        if not node.items or not isinstance(node.items[0], _Sym):
            self.fail(node.pos, "expected an operator after '('")
        return node.items[0].text

    # ----- formulas -----------------------------------------------------------------------------
    def formula(self, node: _Node, depth: int) -> _Dnf:
        if depth > MAX_DEPTH:
            self.fail(node.pos, f"formula nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, _Sym):
            if node.text in ("true", "false"):
                return [()] if node.text == "true" else []
            self.fail(node.pos, f"expected a formula, found '{node.text}'")
        head = self.head(node)
        if head == "and":
            return self.conjoin([(self.formula(arg, depth + 1), arg.pos) for arg in node.items[1:]])
        if head == "or":
            return self.disjoin([self.formula(arg, depth + 1) for arg in node.items[1:]], node.pos)
        if head in _COMPARISONS:
            return self.comparison(head, node, depth)
        self.fail(node.pos, f"unknown operator '{head}' in formula")

    def comparison(self, op: str, node: _List, depth: int) -> _Dnf:
        if len(node.items) < 3:
            self.fail(node.pos, f"'{op}' needs at least two operands")
        terms = [self.term(arg, depth + 1) for arg in node.items[1:]]
        return self.conjoin([(self.compare(op, left, right, node.pos), node.pos) for left, right in itertools.pairwise(terms)])

    # ----- terms --------------------------------------------------------------------------------
    def term(self, node: _Node, depth: int) -> _Linear:
        if isinstance(node, _Sym):
            return self.symbol(node)
        if depth > MAX_DEPTH:
            self.fail(node.pos, f"term nested deeper than {MAX_DEPTH} levels")
        op = self.head(node)
        if op not in _TERM_OPERATORS:
            self.fail(node.pos, f"unknown operator '{op}' in term")
        if len(node.items) < 2:
            self.fail(node.pos, f"'{op}' needs an operand")
        args = [self.term(arg, depth + 1) for arg in node.items[1:]]
        if op == "+":
            return _sum(args)
        if op == "-":
            return _scale(args[0], -1.0) if len(args) == 1 else functools.reduce(_sub, args)
        return self.product(args, node.pos) if op == "*" else self.quotient(args, node.pos)

    def quotient(self, args: list[_Linear], pos: int) -> _Linear:
        coefs, const = args[0]
        for divisor_coefs, divisor in args[1:]:
            if divisor_coefs:
                self.fail(pos, "division by a variable is not linear", UnsupportedError)
            if divisor == 0.0:
                self.fail(pos, "division by zero")
            coefs, const = {var: a / divisor for var, a in coefs.items()}, const / divisor
        return coefs, const

    def symbol(self, sym: _Sym) -> _Linear:
        declared = self.declared.get(sym.text)
        if declared is not None:
            return {(declared[0], declared[1]): 1.0}, 0.0
        if _NUMBER.fullmatch(sym.text):
            return self.number(sym.text, sym.pos)
        if _NAME.fullmatch(sym.text):
            self.fail(sym.pos, f"undeclared variable {sym.text}")
        self.fail(sym.pos, f"unknown symbol '{sym.text}'")


def _simplest(clauses: tuple[Clause, ...]) -> tuple[Clause, ...]:
    """A clause without rows is always violated and makes the others redundant; keep only it."""
    empty = [clause for clause in clauses if clause.A.shape[0] == 0]
    return tuple(empty) or clauses


def _clause(rows: list[_Row], n_outputs: int) -> Clause:
    A = np.zeros((len(rows), n_outputs))
    b = np.empty(len(rows))
    for r, row in enumerate(rows):
        for j, a in row.coefs.items():
            A[r, j] = a
        b[r] = row.b
    return Clause(_frozen(A), _frozen(b), _frozen_mask([row.strict for row in rows]))


def _frozen_mask(flags: list[bool]) -> np.ndarray:
    mask = np.array(flags, dtype=bool)
    mask.flags.writeable = False
    return mask


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float64)
    array.flags.writeable = False
    return array


# ----- public API ------------------------------------------------------------------------------
_cache: OrderedDict[tuple[str, str], Spec] = OrderedDict()
_cache_lock = threading.Lock()


def parse_vnnlib_text(text: str, source: str = "<memory>", n_inputs: int | None = None,
                      n_outputs: int | None = None, *, use_cache: bool = True) -> Spec:
    """Parse VNN-LIB 1.0 or 2.0 text (`verirepair.spec.vnnlib2` says how the version is told);
    errors name ``source``. Cached results are shared: do not mutate them."""
    if not use_cache:
        spec = _parse(text, source)
    else:
        key = (hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), source)
        with _cache_lock:
            spec = _cache.get(key)
            if spec is not None:
                _cache.move_to_end(key)
        if spec is None:
            spec = _parse(text, source)
            with _cache_lock:
                _cache[key] = spec
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
    _check_counts(spec, n_inputs, n_outputs)
    return spec


def _parse(text: str, source: str) -> Spec:
    from verirepair.spec.vnnlib2 import is_vnnlib2, parse_vnnlib2_text

    return parse_vnnlib2_text(text, source) if is_vnnlib2(text) else _Parser(text, source).parse()


def parse_vnnlib(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> Spec:
    """Parse a VNN-LIB 1.0 or 2.0 file, gzip-compressed or not; with ``n_inputs``/``n_outputs`` also
    check it fits the network."""
    data = read_input_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        before = data[:error.start].decode("utf-8", "replace")
        raise InputError(path, _place(before, len(before)), "not UTF-8 text") from None
    return parse_vnnlib_text(text, str(path), n_inputs, n_outputs)


def _check_counts(spec: Spec, n_inputs: int | None, n_outputs: int | None) -> None:
    for what, expected, actual in (("inputs", n_inputs, spec.n_inputs), ("outputs", n_outputs, spec.n_outputs)):
        if expected is not None and expected != actual:
            raise InputError(spec.source, None, f"the property declares {actual} {what} "
                                                f"but the network has {expected}")
