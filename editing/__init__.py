"""Editors on one attention-control substrate: Prompt-to-Prompt, MasaCtrl, DiffEdit."""

from .api import EDITORS, EditOutput, edit, get_editor, validate_edit

__all__ = ["EDITORS", "EditOutput", "edit", "get_editor", "validate_edit"]
