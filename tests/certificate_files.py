"""Certificates written by the verifier, and forged copies of them, for the checker's tests."""

from __future__ import annotations

import json
from pathlib import Path

from verirepair.verify import VerifySettings
from verirepair.verify.certify import verify_with_certificate


def certified(onnx_path: Path, vnnlib_path: Path, settings: VerifySettings, folder: Path) -> Path:
    """The certificate of the verifier's proof of the property (``folder/proof.json``); the proof must exist."""
    certificate = folder / "proof.json"
    verdict, missing = verify_with_certificate(onnx_path, vnnlib_path, settings, certificate)
    assert verdict.status == "unsat" and missing is None, verdict.notes
    return certificate


def first_region(data: dict) -> dict:
    return data["regions"][0]


def forged(folder: Path, data: dict) -> Path:
    """``data`` written as a certificate file (``folder/forged.json``)."""
    path = folder / "forged.json"
    path.write_text(json.dumps(data))
    return path
