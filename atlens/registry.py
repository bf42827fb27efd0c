"""Name -> builder registries whose options are validated against the builder's signature.

A configuration section such as ``{name: wrn, depth: 34, widen_factor: 10}`` is checked here:
the name must be registered, every other key must be a keyword of the builder, and each value
must match the builder's type hint. This is what lets components be chosen by configuration while
bad input still stops with one message that names the key and the allowed values.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from atlens.errors import ConfigError

T = TypeVar("T")


def parse_number(value: Any) -> Any:
    """Accept ``"8/255"`` style fractions where a number is expected (researchers write ε that way)."""
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            return value
    return value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise a ConfigError naming ``key``."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for arg in candidates:
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        if len(candidates) == 1:
            raise ConfigError(errors[0] + (" (or null)" if type(None) in args else ""))
        names = " or ".join(_type_name(a) for a in candidates)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        value = parse_number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number (e.g. 0.031 or 8/255), got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    name: str
    annotation: Any
    default: Any
    required: bool


class Registry(Generic[T]):
    """Builders registered by name; ``build`` validates options before calling one."""

    def __init__(self, kind: str, skip: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._skip = set(skip)  # arguments supplied by atlens itself, not by the user
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            self._builders[name] = builder
            return builder

        return decorator

    @property
    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names)}")
        return self._builders[name]

    def options(self, name: str) -> dict[str, Option]:
        builder = self.get(name)
        hints = typing.get_type_hints(builder.__init__ if inspect.isclass(builder) else builder)
        result = {}
        for param in inspect.signature(builder).parameters.values():
            if param.name in self._skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            result[param.name] = Option(
                param.name,
                hints.get(param.name, param.annotation),
                None if param.default is param.empty else param.default,
                param.default is param.empty,
            )
        return result

    def validate(self, name: str, options: dict[str, Any], section: str) -> dict[str, Any]:
        """Check and coerce user options for ``name``; returns them with defaults filled in."""
        known = self.options(name)
        unknown = sorted(set(options) - set(known))
        if unknown:
            allowed = ", ".join(sorted(known)) or "(none)"
            raise ConfigError(
                f"{section}: unknown option(s) {', '.join(unknown)} for {self.kind} {name!r}; "
                f"allowed: {allowed}"
            )
        resolved = {}
        for key, option in known.items():
            if key in options:
                resolved[key] = coerce(options[key], option.annotation, f"{section}.{key}")
            elif option.required:
                raise ConfigError(f"{section}.{key} is required for {self.kind} {name!r}")
            else:
                resolved[key] = option.default
        return resolved

    def build(self, name: str, options: dict[str, Any], section: str, **provided: Any) -> T:
        return self.get(name)(**provided, **self.validate(name, options, section))
