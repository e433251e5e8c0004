"""verirepair: verify and repair neural networks (ONNX + VNN-LIB).

The Python API (`verirepair.api`, docs/api.md): `verify`, `check_and_fix`, `bench`,
`check_certificate`; errors are `InputError`, `SettingsError` and `NotYet` (`verirepair.errors`).
"""

from .api import BenchResult, bench, check_and_fix, check_certificate, verify
from .errors import InputError, NotYet, SettingsError

__version__ = "0.1.0"

__all__ = ["BenchResult", "InputError", "NotYet", "SettingsError", "__version__", "bench", "check_and_fix",
           "check_certificate", "verify"]
