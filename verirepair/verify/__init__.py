"""Verification strategy and results: falsify, bound, search; witnesses replayed in onnxruntime."""

from .deadline import Deadline
from .pipeline import load_problem, verify, verify_files
from .result import Counterexample, Status, Verdict
from .settings import VerifySettings
from .witness import confirmed_counterexample, format_witness

__all__ = ["Counterexample", "Deadline", "Status", "Verdict", "VerifySettings", "confirmed_counterexample",
           "format_witness", "load_problem", "verify", "verify_files"]
