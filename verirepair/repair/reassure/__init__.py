"""REASSURE (Fu & Li, ICLR 2022): patch networks exact on buggy linear regions, zero away from them."""

from .strategy import ReassureSettings, ReassureStrategy, reassure_strategy

__all__ = ["ReassureSettings", "ReassureStrategy", "reassure_strategy"]
