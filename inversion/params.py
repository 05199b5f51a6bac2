"""Validated parameters with per-model-family defaults, shared by inverters, editors
and the app: one declaration gives the default, the type, the range, the help
text shown in the CLI and the UI, and the one-line message for a bad value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ParameterError


@dataclass(frozen=True)
class Param:
    default: Any  # a value, or {family: value} with a "default" key
    kind: type
    low: float | None = None
    high: float | None = None
    help: str = ""
    choices: tuple | None = None

    def default_for(self, keys: str | tuple[str, ...]) -> Any:
        """The default for a model, looked up by its keys most specific first (a model's
        `defaults`: its family, then its sampler), else the "default" entry."""
        if not isinstance(self.default, dict):
            return self.default
        for key in (keys,) if isinstance(keys, str) else keys:
            if key in self.default:
                return self.default[key]
        return self.default["default"]

    def check(self, name: str, value: Any, owner: str) -> Any:
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("true", "1", "yes")
                value = bool(value)
            elif self.kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                value = self.kind(value)
        except (TypeError, ValueError):
            raise ParameterError(f"{owner}: {name} must be {self.kind.__name__}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"{owner}: {name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.kind in (int, float):
            if value != value or (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ParameterError(f"{owner}: {name}={value} is out of range [{self.low}, {self.high}] ({self.help})")
        return value


def resolve(specs: dict[str, Param], family: str | tuple[str, ...], overrides: dict, owner: str) -> dict:
    unknown = set(overrides) - set(specs)
    if unknown:
        raise ParameterError(f"{owner} has no parameter {', '.join(sorted(unknown))}; it takes: {', '.join(specs) or 'none'}")
    out = {k: p.default_for(family) for k, p in specs.items()}
    for k, v in overrides.items():
        if v is not None:
            out[k] = specs[k].check(k, v, owner)
    return out


__all__ = ["Param", "ParameterError", "resolve"]
