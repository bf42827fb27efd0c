"""Which of a command's paths each option applies to, so an option that would do nothing is refused, never
silently ignored: ``atlens cas RUN --epsilon 4/255`` stops and says that a run's CAS uses its training threat
model, instead of computing at 8/255.

Every option is added through ``Options.add`` with the paths it applies to (``atlens.cli.main.build_parser``
keeps them as ``parser.options``); ``refuse`` checks a parsed command line against them (a test walks every
option of every command).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from atlens.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    flag: str
    paths: tuple[str, ...]
    default: object
    why: str  # what to do instead, for the message


@dataclass(frozen=True)
class Command:
    path: Callable[[argparse.Namespace], str]  # which path a parsed command line takes
    paths: dict[str, str]  # each path and how the message names it


class Options:
    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.rules: dict[str, dict[str, Rule]] = {}

    def command(self, name: str, path: Callable[[argparse.Namespace], str], **paths: str) -> None:
        """Declare ``name``'s paths (``run="a RUN directory"``) and how a command line chooses one."""
        self.commands[name] = Command(path, paths)
        self.rules[name] = {}

    def add(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, command: str, *flags: str,
            paths: tuple[str, ...] | None = None, why: str = "", **kwargs: object) -> argparse.Action:
        """``parser.add_argument(*flags, **kwargs)``, applying to ``paths`` of ``command`` (default: all)."""
        action = parser.add_argument(*flags, **kwargs)
        every = tuple(self.commands[command].paths) if command in self.commands else ()
        self.rules.setdefault(command, {})[action.dest] = Rule(flags[0], paths or every, action.default, why)
        return action

    def refuse(self, args: argparse.Namespace) -> None:
        """A ConfigError naming the first option given that does not apply to the path ``args`` takes."""
        command = self.commands.get(args.command)
        if command is None:
            return
        path = command.path(args)
        for dest, rule in self.rules[args.command].items():
            value = getattr(args, dest, rule.default)
            if path not in rule.paths and value != rule.default:
                where = command.paths[path]
                raise ConfigError(f"{rule.flag} does not apply to {where}" + (f": {rule.why}" if rule.why else ""))

