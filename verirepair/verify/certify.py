"""Verification that also writes a proof certificate for an `unsat`.

A certificate names its network and property by the SHA-256 of the files, so this works on files
only: the verdict is about the bytes on disk, and so is the certificate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .certificate import Certificate, RegionCertificate, file_sha256
from .pipeline import verify_files
from .result import Verdict
from .settings import VerifySettings


def verify_with_certificate(onnx_path: str | Path, vnnlib_path: str | Path, settings: VerifySettings,
                            certificate_path: str | Path) -> tuple[Verdict, str | None]:
    """Verify the files with the certifiable search and write the certificate for an ``unsat``.
    Returns the verdict, whose last note says what happened, and why no certificate was written
    (None when one was)."""
    proofs: list[RegionCertificate | None] = []
    verdict = verify_files(onnx_path, vnnlib_path, settings, proofs)
    missing = _write(certificate_path, onnx_path, vnnlib_path, verdict.status, proofs)
    trusted = sum(p.trusted for p in proofs if p is not None)
    resting = f" ({trusted} of its nodes, clauses or bounds rest on a MILP solver)" if trusted else ""
    note = f"certificate written to {certificate_path}{resting}" if missing is None else f"no certificate written: {missing}"
    return dataclasses.replace(verdict, notes=verdict.notes + (note,)), missing


def _write(path: str | Path, onnx_path: str | Path, vnnlib_path: str | Path, status: str,
           proofs: list[RegionCertificate | None]) -> str | None:
    """Write the certificate when every region has one; else the reason none was written."""
    if status != "unsat":
        return f"the answer is {status}"
    regions = [p for p in proofs if p is not None]
    if len(regions) == 0 or len(regions) != len(proofs):
        return "some region was not decided by a certifiable proof"
    Certificate(file_sha256(onnx_path), file_sha256(vnnlib_path), regions).write(path)
    return None
