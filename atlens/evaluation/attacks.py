"""The named attacks of atlens, in one table: how a name is parsed, what it builds, its label in result
tables and its cost (gradient evaluations per example, for time estimates).

Names: ``clean``, ``fgsm``, ``pgdN`` (e.g. pgd20, pgd100), ``cw`` (CW∞: PGD-100 on the margin loss),
``autoattack`` (standard AutoAttack; ``aa`` for short), ``transfer:RUN[@CHECKPOINT]`` (PGD-20 crafted on
another model, evaluated on this one). Every consumer — the eval suite, the Python API, CAS tracking, the
config check and the time estimate — reads names through ``ATTACKS``, where outside code registers its own.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atlens.attacks import ThreatModel, fgsm
from atlens.errors import ConfigError
from atlens.evaluation.accuracy import Attack, PGDAttack
from atlens.evaluation.autoattack import AutoAttackAdapter


@dataclass
class NamedAttack:
    name: str
    attack: Attack | None  # None: clean accuracy
    params: dict[str, Any]


class TransferAttack:
    """PGD crafted on ``source``; the attacked model only classifies the result."""

    def __init__(self, source: nn.Module, pgd_attack: PGDAttack) -> None:
        self.source = source
        self.pgd = pgd_attack

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.pgd(self.source, x, y)


@dataclass(frozen=True)
class Context:
    """What building an attack may need besides its name."""

    model: nn.Module | None
    threat: ThreatModel
    num_classes: int = 10
    seed: int = 0
    device: str | torch.device = "cpu"
    kappa: float = 0.0


@dataclass(frozen=True)
class AttackKind:
    pattern: str  # a regular expression over the whole name; its groups are the builder's arguments
    label: Callable[[re.Match], str]
    cost: Callable[[re.Match], float]
    build: Callable[[re.Match, Context], NamedAttack]
    syntax: str  # how a user writes the name, for messages and help (pgdN)
    gradient: bool = True  # False: needs no gradient (clean)
    pgd: bool = False  # a plain PGD-N (what CAS tracking accepts)
    threat_only: bool = False  # built from the threat model alone (no model, classes or seed): per-epoch evaluation


# standard AutoAttack runs APGD-CE (100), then on what survives APGD-T (9 x 100), FAB-T (9 x 100, each about 1.5)
# and Square (5,000 forward-only queries, about a third each); half of the examples surviving is assumed
_AUTOATTACK_STEPS = 100 + 0.5 * (900 + 1.5 * 900 + 5000 / 3)


def _pgd(match: re.Match, ctx: Context) -> NamedAttack:
    attack = PGDAttack(ctx.threat, int(match.group(1)))
    return NamedAttack(match.string, attack, attack.describe())


def _cw(match: re.Match, ctx: Context) -> NamedAttack:
    attack = PGDAttack(ctx.threat, int(match.group(1) or 100), loss="margin", kappa=ctx.kappa)
    return NamedAttack(match.string, attack, {**attack.describe(), "kappa": ctx.kappa})


def _autoattack(match: re.Match, ctx: Context) -> NamedAttack:
    adapter = AutoAttackAdapter(ctx.model, ctx.threat.norm, ctx.threat.epsilon, ctx.num_classes, ctx.seed,
                                device=ctx.device)
    return NamedAttack("autoattack", adapter, adapter.parameters())


def _transfer(match: re.Match, ctx: Context) -> NamedAttack:
    from atlens.runs import load_model

    run, checkpoint = match.group(1), match.group(2) or "best"
    source = load_model(run, checkpoint, ctx.device)
    attack = PGDAttack(ctx.threat, 20)
    return NamedAttack(match.string, TransferAttack(source, attack),
                       {**attack.describe(), "source": run, "source_checkpoint": checkpoint})


def _fgsm(match: re.Match, ctx: Context) -> NamedAttack:
    threat = ctx.threat
    return NamedAttack("fgsm", lambda m, x, y: fgsm(m, x, y, threat),
                       {"norm": threat.norm, "epsilon": threat.epsilon, "step_size": threat.epsilon})


class AttackTable:
    """Attacks by name: a registry whose names may carry arguments (``pgd20``: the pattern ``pgd([1-9]\\d*)``).

    ``register`` adds a kind (a builder ``(match, context) -> NamedAttack``); a module listed under a config's
    ``imports`` (or ``atlens --import``) can register its own, which every command then accepts."""

    def __init__(self) -> None:
        self.kinds: dict[str, AttackKind] = {}

    def register(self, key: str, *, pattern: str | None = None, syntax: str | None = None,
                 label: Callable[[re.Match], str] | None = None, cost: Callable[[re.Match], float] | None = None,
                 gradient: bool = True, pgd: bool = False, threat_only: bool = False
                 ) -> Callable[[Callable], Callable]:
        """Register a builder for names matching ``pattern`` (default: ``key`` itself); ``label`` heads its column
        in result tables, ``cost`` is its gradient evaluations per example (for time estimates)."""
        def decorator(builder: Callable[[re.Match, Context], NamedAttack]) -> Callable:
            self.kinds[key] = AttackKind(pattern or re.escape(key), label or (lambda m: m.string),
                                         cost or (lambda m: 1.0), builder, syntax or key, gradient, pgd, threat_only)
            return builder

        return decorator

    @property
    def syntax(self) -> list[str]:
        """How each registered kind is written (clean, fgsm, pgdN, ...), in registration order."""
        return [kind.syntax for kind in self.kinds.values()]

    def match(self, name: str) -> tuple[AttackKind, re.Match]:
        for kind in self.kinds.values():
            if found := re.fullmatch(kind.pattern, name):
                return kind, found
        literal = [key for key, kind in self.kinds.items() if re.fullmatch(kind.pattern, key)]  # names as written
        close = difflib.get_close_matches(name, [*literal, "pgd20"], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown attack {name!r}{hint}; available: {', '.join(self.syntax)}")

    def build(self, name: str, ctx: Context) -> NamedAttack:
        kind, found = self.match(name)
        return kind.build(found, ctx)

    def label(self, name: str) -> str:
        kind, found = self.match(name)
        return kind.label(found)

    def heading(self, name: str) -> str:
        """A result table's column for ``name``: its label, or the name itself when no registered kind reads it
        (a result of a transfer back, or of an attack whose package is not imported)."""
        try:
            return self.label(name)
        except ConfigError:
            return name

    def cost(self, name: str) -> float:
        """Gradient evaluations per example of the named attack (a forward pass counts a third)."""
        kind, found = self.match(name)
        return kind.cost(found)

    def of_threat(self, name: str, threat: ThreatModel) -> Attack:
        """The named attack built from ``threat`` alone (fgsm, pgdN, cwN: what a training run evaluates with)."""
        kind, found = self.match(name)
        if not kind.threat_only:
            usable = ", ".join(k.syntax for k in self.kinds.values() if k.threat_only)
            raise ConfigError(f"{name!r} cannot score a training run's epochs; use one of {usable}")
        return kind.build(found, Context(None, threat, 0)).attack

    def pgd_steps(self, name: str) -> int:
        """N of a plain ``pgdN`` name; anything else is refused with a message."""
        kind, found = self.match(name)
        if not kind.pgd:
            raise ConfigError(f"expected pgdN (e.g. pgd20), got {name!r}")
        return int(found.group(1))

    def is_pgd(self, name: str) -> bool:
        try:
            return self.match(name)[0].pgd
        except ConfigError:
            return False


ATTACKS = AttackTable()
ATTACKS.register("clean", label=lambda m: "Natural", cost=lambda m: 1 / 3, gradient=False)(
    lambda m, ctx: NamedAttack("clean", None, {}))
# a gradient attack's steps, then the forward pass that scores what it found (a third of a gradient evaluation)
ATTACKS.register("fgsm", label=lambda m: "FGSM", cost=lambda m: 1 + 1 / 3, threat_only=True)(_fgsm)
ATTACKS.register("pgd", pattern=r"pgd([1-9]\d*)", syntax="pgdN (e.g. pgd20)", label=lambda m: f"PGD-{m.group(1)}",
                 cost=lambda m: int(m.group(1)) + 1 / 3, pgd=True, threat_only=True)(_pgd)
# cw: the CW∞ column of the papers' tables, PGD-100 on the margin; cwN: N steps (Wang et al. select by cw40)
ATTACKS.register("cw", pattern=r"cw([1-9]\d*)?", syntax="cw or cwN (PGD-N on the CW margin)",
                 label=lambda m: "CW∞" if m.group(1) is None else f"CW-{m.group(1)}",
                 cost=lambda m: int(m.group(1) or 100) + 1 / 3, threat_only=True)(_cw)
ATTACKS.register("autoattack", pattern="autoattack|aa", label=lambda m: "AA", cost=lambda m: _AUTOATTACK_STEPS)(
    _autoattack)
ATTACKS.register("transfer", pattern=r"transfer:([^@]+)(?:@(.+))?", syntax="transfer:RUN[@CHECKPOINT]",
                 cost=lambda m: 20.0)(_transfer)

# the second paper's Table 2 columns, in order
TABLE_ORDER = ("clean", "fgsm", "pgd20", "pgd100", "cw", "autoattack")
DEFAULT_ATTACKS = ",".join(TABLE_ORDER)
