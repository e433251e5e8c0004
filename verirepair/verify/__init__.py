"""Verification strategy and results: falsify, bound, search; witnesses replayed in onnxruntime."""

from ..callable_package import make_callable
from .certificate import Certificate, RegionCertificate, file_sha256
from .certify import verify_with_certificate
from .deadline import Deadline
from .pipeline import check_problem, load_problem, verify, verify_files
from .result import Counterexample, Status, Verdict
from .settings import VerifySettings
from .witness import (
           confirmed_counterexample,
           format_witness,
           representable_bounds,
           witness_point,
)

__all__ = [
           "Certificate",
           "Counterexample",
           "Deadline",
           "RegionCertificate",
           "Status",
           "Verdict",
           "VerifySettings",
           "check_problem",
           "confirmed_counterexample",
           "file_sha256",
           "format_witness",
           "load_problem",
           "representable_bounds",
           "verify",
           "verify_files",
           "verify_with_certificate",
           "witness_point",
]


make_callable(__name__)  # `verirepair.verify(...)`: the API function
