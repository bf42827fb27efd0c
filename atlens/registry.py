"""Name -> builder registries whose options are validated against the builder's signature.

A configuration section such as ``{name: wrn, depth: 34, widen_factor: 10}`` is checked here:
the name must be registered, every other key must be a keyword of the builder, and each value
must match the builder's type hint. This is what lets components be chosen by configuration while
bad input still stops with one message that names the key and the allowed values.
"""

from __future__ import annotations

import difflib
import inspect
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from atlens.config import ComponentConfig, coerce
from atlens.errors import ConfigError

T = TypeVar("T")


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
            if name in self._builders and self._builders[name] is not builder:
                warnings.warn(f"{self.kind} {name!r} registered again; the new builder replaces "
                              f"{self._builders[name].__qualname__}", stacklevel=2)
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
            close = difflib.get_close_matches(str(name), self.names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self.names) or '(none)'} "
                              f"(a {self.kind} of your own: list the module that registers it under imports)")
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

    def validate(self, name: str, options: dict[str, Any], section: str,
                 fields: tuple[str, ...] = ()) -> dict[str, Any]:
        """Check and coerce user options for ``name``; returns them with defaults filled in. ``fields`` are the
        section's own keys besides the options (suggested for a misspelt key, too)."""
        known = self.options(name)
        unknown = sorted(set(options) - set(known))
        if unknown:
            allowed = ", ".join(sorted(known)) or "(none)"
            close = [m for k in unknown for m in difflib.get_close_matches(str(k), [*known, *fields], n=1, cutoff=0.7)]
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ConfigError(
                f"{section}: unknown option(s) {', '.join(unknown)} for {self.kind} {name!r}{hint}; "
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

    def accepted(self, name: str, provided: dict[str, Any]) -> dict[str, Any]:
        """The arguments atlens supplies that the builder's signature takes (all of them with ``**kwargs``), so a
        builder declares only what it uses: a criterion without teachers is never handed ``teachers``."""
        parameters = inspect.signature(self.get(name)).parameters
        if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            return provided
        return {key: value for key, value in provided.items() if key in parameters}

    def build(self, name: str, options: dict[str, Any], section: str, **provided: Any) -> T:
        """Validate ``options`` and call the builder with them and the ``provided`` arguments its signature
        takes; a ValueError raised by the builder (a value out of its range) becomes a ConfigError that names
        the section."""
        options = self.validate(name, options, section)
        try:
            return self.get(name)(**self.accepted(name, provided), **options)
        except ValueError as err:
            raise ConfigError(f"{section} ({self.kind} {name!r}): {err}") from None

    def build_from(self, section_cfg: ComponentConfig, section: str, **provided: Any) -> T:
        """``build`` for a config section such as ``cfg.criterion``."""
        return self.build(section_cfg.name, section_cfg.options, section, **provided)

    def describe(self, built: Any, section_cfg: ComponentConfig, section: str) -> dict[str, Any]:
        """What ``methods.json`` records of a built component: its own ``describe()``, or its name and resolved
        options when it has none (an optimiser, a schedule)."""
        if callable(getattr(built, "describe", None)):
            return built.describe()
        return {"name": section_cfg.name, **self.validate(section_cfg.name, section_cfg.options, section)}
