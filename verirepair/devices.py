"""The compute device a run asks for, checked before any work starts."""

from __future__ import annotations

from .errors import InputError


def resolve_device(name: str, place: str = "device") -> str:
    """``auto``: CUDA when a device is there, else the CPU; a CUDA device asked for on a machine
    without one is bad input (``place`` names the option in the message)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, place, f"{name} requested but no CUDA device is available")
    return name
