"""Inverter registry: name -> inverter instance."""

from __future__ import annotations

from .base import Inverter, Param, ParameterError
from .ddim import DDIMInverter
from .easyinv import EasyInvInverter
from .fixed_point import FixedPointInverter
from .iterinv import IterInvInverter
from .renoise import ReNoiseInverter
from .rnri import RNRIInverter

INVERTERS: dict[str, Inverter] = {
    inv.name: inv
    for inv in (DDIMInverter(), EasyInvInverter(), RNRIInverter(), ReNoiseInverter(), FixedPointInverter(), IterInvInverter())
}


def get_inverter(name: str) -> Inverter:
    try:
        return INVERTERS[name]
    except KeyError:
        raise ParameterError(f"unknown inverter {name!r}; choose one of: {', '.join(INVERTERS)}") from None


__all__ = ["INVERTERS", "Inverter", "Param", "ParameterError", "get_inverter"]
