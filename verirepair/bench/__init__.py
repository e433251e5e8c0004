"""VNN-COMP style benchmark runs: instances in, per-instance results, results CSV and a score out."""

from ..callable_package import make_callable
from .instances import GroundTruth, Instance, expected_results, read_ground_truth, read_instances
from .records import InstanceRecord
from .runner import BenchInterrupted, VerifyOptions, run_instances
from .scoring import TABLE_HEADER, Summary, results_csv, summarise, table_row
from .witness_check import check_witness

__all__ = ["TABLE_HEADER", "BenchInterrupted", "GroundTruth", "Instance", "InstanceRecord", "Summary", "VerifyOptions",
           "check_witness", "expected_results", "read_ground_truth", "read_instances", "results_csv", "run_instances", "summarise", "table_row"]

make_callable(__name__)  # `verirepair.bench(...)`: the API function
