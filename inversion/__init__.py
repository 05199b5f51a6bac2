"""Inversion of diffusion models: models, inverters, reconstruction, metrics."""

from .models import MODELS, load_model
from .pipeline import evaluate, invert, reconstruct
from .result import CascadeInversion, Inversion, load_inversion

__all__ = ["MODELS", "CascadeInversion", "Inversion", "evaluate", "invert", "load_inversion", "load_model", "reconstruct"]
