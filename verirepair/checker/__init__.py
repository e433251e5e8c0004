"""An independent checker of proof certificates (`verirepair check-certificate`).

It shares no code with the verifier: its own ONNX reader (`onnx_reader`), VNN-LIB reader
(`vnnlib_reader`), certificate reader (`certificate_file`) and outward-rounded bounds (`bounds`);
it imports only numpy, the onnx protobuf package and `verirepair.errors` / `verirepair.files`.
"""

from .check import CheckResult, check_certificate

__all__ = ["CheckResult", "check_certificate"]
