"""The errors a user can cause, under one base class.

Command lines and the app catch `UserError` (and only it) to show a one-line
message and keep going; anything else is a bug, reported with a traceback.
Each subclass also derives from the built-in error it has always been, so
`except ValueError` in user code keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """A choice or input a user can fix; the message says how."""

    mark = "⚠️"  # how the app marks the message on the page


class ImageError(UserError, ValueError):
    """An input image that cannot be used; the message says why."""


class PromptError(UserError, ValueError):
    """A prompt the text encoder cannot take (too long, wrong type, empty where one is needed)."""


class ParameterError(UserError, ValueError):
    """An unknown or out-of-range inverter, editor or request parameter."""


class ModelError(UserError, RuntimeError):
    """A model cannot be built or used as asked; the message says what to do."""


class IncompatibleChoice(UserError, ValueError):
    """An inverter/editor/model combination that cannot work (e.g. IterInv on SD)."""


class IncompatibleInversion(UserError, ValueError):
    """An inversion used with a model, sampler or step count it was not made for."""


class WordError(UserError, ValueError):
    """A word, or a prompt pair, that an edit cannot use; the message says why."""


class UnsupportedAttention(UserError, ValueError):
    """The UNet's attention layers are not the separate self/cross kind editors control."""


class Diverged(UserError, ArithmeticError):
    """An inverter's iterates grew until the network overflowed: the settings, not the image, are at fault."""
