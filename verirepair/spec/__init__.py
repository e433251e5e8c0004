"""Safety properties: the `Spec` type and the VNN-LIB reader/writer."""

from .model import Box, Clause, Region, Spec, disjunction_of
from .vnnlib import parse_vnnlib, parse_vnnlib_text
from .vnnlib_write import vnnlib_text, write_vnnlib

__all__ = ["Box", "Clause", "Region", "Spec", "disjunction_of", "parse_vnnlib", "parse_vnnlib_text", "vnnlib_text", "write_vnnlib"]
