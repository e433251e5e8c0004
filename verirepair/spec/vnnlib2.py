"""Read VNN-LIB 2.0 queries into the same `Spec` as VNN-LIB 1.0 (see `verirepair.spec.vnnlib`).

The official ``vnnlib`` package (``pip install 'verirepair[vnnlib2]'``) parses and type-checks the
query; this module walks its syntax tree. A 2.0 query looks like::

    (vnnlib-version <2.0>)
    (declare-network acas
        (declare-input X float32 [1, 5])
        (declare-output Y float32 [5]))
    (assert (and (>= X[0, 0] 0.6) (<= X[0, 0] 0.679857769) ...))
    (assert (or (>= Y[0] 3.99) (!= Y[1] Y[2])))

Version rule: a text is 2.0 when one of its lines starts (after blanks) with ``(vnnlib-version`` or
``(declare-network``; neither is a 1.0 command, and the 2.0 grammar requires the version line first.

Semantics are exactly those of the 1.0 reader: the query describes the unsafe set; comparisons are
between reals (constants read as float64 from their decimals, whatever the tensor's element type);
``==`` is two non-strict rows, ``!=`` the disjunction of ``<`` and ``>``; strict comparisons are kept.
Tensor elements are numbered in row-major order over the declared shape, as the flattened network
input and output are. An ONNX name given in a declaration is not checked against the network.

What verirepair cannot represent is refused with one line: several networks, hidden-layer variables,
a network with several input or output tensors, non-floating-point tensors, products of variables,
comparisons that mix inputs and outputs or constrain more than one input (the input set must be
boxes, one per disjunct).
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

import numpy as np

from verirepair.errors import InputError, UnsupportedError
from verirepair.extras import require
from verirepair.spec.model import Spec
from verirepair.spec.vnnlib import _Dnf, _Linear, _scale, _SpecBuilder, _sub, _sum

_VERSION_2_COMMAND = re.compile(r"^[ \t]*\([ \t]*(?:vnnlib-version|declare-network)\b", re.MULTILINE)
_SYNTAX_ERROR = re.compile(r"syntax error at line (\d+), column (\d+): (.*)")
_NON_REAL_TYPE = re.compile(r"[IU]\d+|C\d+|Bool|String")  # DType names: integers, complex, booleans, strings
_OPERATORS = {"LessEqual": "<=", "GreaterEqual": ">=", "LessThan": "<", "GreaterThan": ">",
              "Equal": "=", "NotEqual": "!="}


def is_vnnlib2(text: str) -> bool:
    return _VERSION_2_COMMAND.search(text) is not None


def parse_vnnlib2_text(text: str, source: str) -> Spec:
    """The `Spec` of a VNN-LIB 2.0 query; every problem is one `InputError` line naming ``source``."""
    vnnlib = require("vnnlib", "vnnlib2", "needed to read VNN-LIB 2.0", source)
    try:
        query = vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as error:
        place, reason = _library_error(str(error))
        raise InputError(source, place, reason) from None
    except IndexError as error:  # C++ std::out_of_range: std::stod on a number beyond float64
        reason = "a number is out of the float64 range" if "stod" in str(error) else f"cannot read the query ({error})"
        raise InputError(source, None, reason) from None
    return _QueryReader(vnnlib, query, text, source).spec()


def _library_error(message: str) -> tuple[str | None, str]:
    """(place, reason) of the package's error: a syntax error, or a JSON list of type errors."""
    syntax = _SYNTAX_ERROR.search(message)
    if syntax:
        token = syntax.group(3).strip()
        at = "the end of the query" if token in ("", "''") else token
        return f"line {syntax.group(1)}, column {syntax.group(2)}", f"syntax error at {at}"
    try:
        errors = json.loads(message)["errors"]
        first = errors[0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, message.strip().splitlines()[0] if message.strip() else "not a VNN-LIB 2.0 query"
    distinct = {json.dumps(error, sort_keys=True) for error in errors}
    more = f" (and {len(distinct) - 1} more)" if len(distinct) > 1 else ""
    symbol = f" '{first['offendingSymbol']}'" if first.get("offendingSymbol") else ""
    hint = f": {first['hint']}" if first.get("hint") else ""
    line = first.get("line")
    return (f"line {line}" if line else None), f"{first.get('message', 'invalid query')}{symbol}{hint}{more}"


class _Tensor:
    """One declared input or output tensor: its kind in the `Spec` (``X`` or ``Y``) and shape."""

    def __init__(self, kind: str, name: str, shape: list[int]) -> None:
        self.kind, self.name, self.shape = kind, name, tuple(shape)
        self.size = math.prod(self.shape)

    def flat_index(self, indices: list[int]) -> int | None:
        """Row-major position of the element; None when ``indices`` are not within the shape."""
        if len(indices) != len(self.shape) or not all(0 <= i < n for i, n in zip(indices, self.shape)):
            return None
        return int(np.ravel_multi_index(tuple(indices), self.shape)) if self.shape else 0

    def element(self, flat: int) -> str:
        if not self.shape:
            return self.name
        return f"{self.name}[{', '.join(str(int(i)) for i in np.unravel_index(flat, self.shape))}]"


class _QueryReader(_SpecBuilder):
    """Walks the package's syntax tree; positions are line numbers (the package gives no columns)."""

    input: _Tensor
    output: _Tensor

    def __init__(self, vnnlib: Any, query: Any, text: str, source: str) -> None:
        super().__init__(source)
        self.vnnlib = vnnlib
        self.query = query
        self.text = text

    def place(self, pos: int) -> str | None:
        return f"line {pos}" if pos > 0 else None

    def input_name(self, index: int) -> str:
        return self.input.element(index)

    def input_pos(self, index: int) -> int:
        return self.line_of(r"\(\s*declare-input\b")

    def line_of(self, pattern: str, occurrence: int = 0) -> int:
        matches = list(re.finditer(pattern, self.text))
        if len(matches) <= occurrence:
            return 0
        return self.text.count("\n", 0, matches[occurrence].start()) + 1

    # ----- declarations -------------------------------------------------------------------------
    def spec(self) -> Spec:
        networks = self.query.networks
        if len(networks) != 1:
            self.fail(self.line_of(r"\(\s*declare-network\b", 1),
                      f"the query declares {len(networks)} networks; verirepair verifies one network",
                      UnsupportedError)
        network = networks[0]
        if network.hidden:
            self.fail(self.line_of(r"\(\s*declare-hidden\b"),
                      f"hidden-layer variable {network.hidden[0].name} is not supported; "
                      "only the network's inputs and outputs can be constrained", UnsupportedError)
        self.input = self.tensor(network.inputs, "X", "input")
        self.output = self.tensor(network.outputs, "Y", "output")
        asserts = [(self.formula(assertion.expr), self.line(assertion.expr)) for assertion in self.query.assertions]
        return self.build(self.conjoin(asserts), self.input.size, self.output.size)

    def tensor(self, declarations: Any, kind: str, what: str) -> _Tensor:
        pattern = rf"\(\s*declare-{what}\b"
        if len(declarations) != 1:
            self.fail(self.line_of(pattern, 1), f"the network declares {len(declarations)} {what} tensors; "
                                                f"only one {what} is supported", UnsupportedError)
        declaration = declarations[0]
        dtype = declaration.dtype.name
        if _NON_REAL_TYPE.fullmatch(dtype):
            self.fail(self.line_of(pattern), f"{what} {declaration.name} has element type {dtype}; only "
                                             "floating-point tensors are supported", UnsupportedError)
        return _Tensor(kind, declaration.name, list(declaration.shape))

    # ----- formulas and terms -------------------------------------------------------------------
    def line(self, node: Any) -> int:
        """Line of the first variable or constant inside ``node`` (0 when it has none)."""
        line = getattr(node, "line", 0)
        if line:
            return int(line)
        return next((found for child in node.children() if (found := self.line(child))), 0)

    def formula(self, node: Any) -> _Dnf:
        vnnlib = self.vnnlib
        if isinstance(node, vnnlib.And):
            return self.conjoin([(self.formula(arg), self.line(arg)) for arg in node.args])
        if isinstance(node, vnnlib.Or):
            return self.disjoin([self.formula(arg) for arg in node.args], self.line(node))
        operator = _OPERATORS.get(type(node).__name__)
        if operator is None:
            self.fail(self.line(node), f"unsupported formula {node}", UnsupportedError)
        return self.compare(operator, self.term(node.lhs), self.term(node.rhs), self.line(node))

    def term(self, node: Any) -> _Linear:
        vnnlib = self.vnnlib
        if isinstance(node, vnnlib.Var):
            return self.variable(node)
        if isinstance(node, vnnlib.Literal):
            return self.number(node.lexeme, node.line)
        if isinstance(node, vnnlib.Negate):
            return _scale(self.term(node.expr), -1.0)
        if isinstance(node, vnnlib.Plus):
            return _sum([self.term(arg) for arg in node.args])
        if isinstance(node, vnnlib.Minus):
            return functools.reduce(_sub, [self.term(node.head), *(self.term(arg) for arg in node.rest)])
        if isinstance(node, vnnlib.Multiply):
            return self.product([self.term(arg) for arg in node.args], self.line(node))
        self.fail(self.line(node), f"unsupported term {node}", UnsupportedError)

    def variable(self, var: Any) -> _Linear:
        kind = var.kind
        if kind == self.vnnlib.SymbolKind.Hidden:
            self.fail(var.line, f"hidden-layer variable {var.name} is not supported", UnsupportedError)
        tensor = self.input if kind == self.vnnlib.SymbolKind.Input else self.output
        if var.name != tensor.name:
            self.fail(var.line, f"unknown variable {var.name}")
        index = tensor.flat_index(list(var.indices))
        if index is None:
            self.fail(var.line, f"index {list(var.indices)} of {var.name} is outside its shape {list(tensor.shape)}")
        return {(tensor.kind, index): 1.0}, 0.0
