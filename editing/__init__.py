"""Editors on one attention-control substrate: Prompt-to-Prompt, MasaCtrl, DiffEdit; interpolation
between two inverted images; rare-concept seeds from inverted references."""

from .api import EDITORS, EditOutput, edit, get_editor, validate_edit
from .interpolate import Interpolation, interpolate, slerp
from .seeds import ConceptSeeds, SeedSamples, concept_seeds, normalised_mean, sample_seeds

__all__ = ["EDITORS", "ConceptSeeds", "EditOutput", "Interpolation", "SeedSamples", "concept_seeds", "edit", "get_editor",
           "interpolate", "normalised_mean", "sample_seeds", "slerp", "validate_edit"]
