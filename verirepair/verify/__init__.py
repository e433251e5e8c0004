"""Verification strategy and results: falsify, bound, search; witnesses replayed in onnxruntime."""

import sys
import types
from typing import Any

from .certificate import Certificate, RegionCertificate, file_sha256, read_certificate
from .certificate_check import CheckResult, check_certificate
from .deadline import Deadline
from .pipeline import check_problem, load_problem, verify, verify_files
from .result import Counterexample, Status, Verdict
from .settings import VerifySettings
from .witness import confirmed_counterexample, format_witness, representable_bounds, witness_point

__all__ = ["Certificate", "CheckResult", "Counterexample", "RegionCertificate", "check_certificate", "check_problem",
           "file_sha256", "read_certificate", "Deadline", "Status", "Verdict", "VerifySettings", "confirmed_counterexample",
           "format_witness", "load_problem", "representable_bounds", "verify", "verify_files", "witness_point"]


class _CallableModule(types.ModuleType):
    """``verirepair.verify`` names both this package and the API function `verirepair.api.verify`
    (re-exported by ``verirepair``); importing the package rebinds the name to the package, so
    calling the package calls that function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Verdict:
        from ..api import verify as verify_api

        return verify_api(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
