"""Editors on one attention-control substrate: Prompt-to-Prompt, MasaCtrl, DiffEdit; and
interpolation between two inverted images."""

from .api import EDITORS, EditOutput, edit, get_editor, validate_edit
from .interpolate import Interpolation, interpolate, slerp

__all__ = ["EDITORS", "EditOutput", "Interpolation", "edit", "get_editor", "interpolate", "slerp", "validate_edit"]
