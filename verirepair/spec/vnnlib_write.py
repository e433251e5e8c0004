"""Writing a `Spec` back as VNN-LIB 1.0 text (exact decimals, so a round trip is lossless)."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

from verirepair.files import atomic_write_text
from verirepair.spec.model import Box, Clause, Spec


def write_vnnlib(spec: Spec, path: str | Path) -> None:
    """Write ``spec`` as VNN-LIB 1.0, atomically (temporary file in the same folder, then rename)."""
    atomic_write_text(path, vnnlib_text(spec))


def vnnlib_text(spec: Spec) -> str:
    """``spec`` as VNN-LIB 1.0 text; numbers are exact decimals, so reading it back is lossless."""
    lines = [f"; written by verirepair from {' '.join(spec.source.split())}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(spec.n_inputs)] + [""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(spec.n_outputs)] + [""]
    if len(spec.regions) == 1:
        region = spec.regions[0]
        lines += [f"(assert {atom})" for atom in _box_atoms(region.box)]
        outputs = _outputs(region.clauses)
        if outputs:
            lines.append(f"(assert {outputs})")
    else:
        lines.append("(assert (or")
        for region in spec.regions:
            lines.append(f"  (and {' '.join(_box_atoms(region.box))} {_outputs(region.clauses)})")
        lines.append("))")
    return "\n".join(lines) + "\n"


def _box_atoms(box: Box) -> list[str]:
    sides = zip(box.lower.tolist(), box.upper.tolist(), box.open_lower.tolist(), box.open_upper.tolist())
    return [atom for i, (lo, hi, open_lo, open_hi) in enumerate(sides)
            for atom in (f"({'<' if open_hi else '<='} X_{i} {_number(hi)})",
                         f"({'>' if open_lo else '>='} X_{i} {_number(lo)})")]


def _outputs(clauses: tuple[Clause, ...]) -> str:
    """The disjunction of ``clauses``; empty when one has no rows (always violated)."""
    if not clauses:
        return "false"
    if any(clause.A.shape[0] == 0 for clause in clauses):
        return ""
    conjunctions = (" ".join(_row(a, b, strict) for a, b, strict in zip(c.A.tolist(), c.b.tolist(), c.strict.tolist()))
                    for c in clauses)
    return "(or " + " ".join(f"(and {conj})" for conj in conjunctions) + ")"


def _row(coefs: list[float], b: float, strict: bool) -> str:
    terms = [f"Y_{j}" if a == 1.0 else f"(- Y_{j})" if a == -1.0 else f"(* {_number(a)} Y_{j})"
             for j, a in enumerate(coefs) if a != 0.0]
    left = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})" if terms else "0.0"
    return f"({'<' if strict else '<='} {left} {_number(b)})"


def _number(value: float) -> str:
    """Shortest round-tripping decimal, without exponent (SMT-LIB has none)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value} as VNN-LIB")
    text = repr(float(value))
    if "e" in text:
        text = format(Decimal(text), "f")
    return text if "." in text else text + ".0"
