"""Inversion of diffusion models: models, inverters, reconstruction, metrics."""

from .models import MODELS, load_model
from .pipeline import evaluate, generate, invert, reconstruct
from .result import CascadeInversion, Inversion, load_inversion

__all__ = ["MODELS", "CascadeInversion", "Inversion", "evaluate", "generate", "invert", "load_inversion", "load_model", "reconstruct"]
