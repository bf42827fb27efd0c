"""How a run draws its extra data: the samplers, and what a run records about its extra data.

``uniform`` draws every extra example with equal probability (with replacement, as Carmon et al.'s and
Wang et al.'s code do). ``cross_class`` (docs/methods/extra_data.md) draws a class, then an example of it
uniformly; a class's probability is its share of the extra data times its cross-class need

    q_c ∝ n_c · (s_c / mean_k s_k)^strength,    s_c = Σ_{j≠c} max(C[c, j], 0),

where C is the cosine matrix of the class attribution vectors (Wei et al. 2025) of the training examples the
model saw over the last ``every`` epochs, summed over data-parallel ranks: classes that share many features
with others — those whose cross-class features paper 000 finds the model discards as it overfits — get more
extra examples. Until the first refresh, and with ``strength: 0``, it draws like ``uniform``.
"""

from __future__ import annotations

from typing import Any

import torch

from atlens.analysis.attribution import AttributionAccumulator, cosine_matrix
from atlens.config import RunConfig, as_component
from atlens.data.extra import ExtraData
from atlens.data.loader import ExtraStream
from atlens.hooks import Callback
from atlens.registry import Registry

SAMPLERS: Registry = Registry("sampler", skip=("data", "num_classes"))


@SAMPLERS.register("uniform")
class Uniform:
    """Every extra example equally likely, drawn with replacement."""

    name = "uniform"

    def __init__(self, data: ExtraData) -> None:
        self.size = len(data)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.size, (n,), generator=generator)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def class_need(matrix: torch.Tensor) -> torch.Tensor:
    """s_c = Σ_{j≠c} max(C[c, j], 0): how much of its features class c shares with the others (its row of CAS)."""
    return matrix.clone().fill_diagonal_(0).clamp_min(0).sum(1)


@SAMPLERS.register("cross_class")
class CrossClass(Callback):
    """A class by q_c ∝ n_c · (s_c / mean s)^strength, then one of its extra examples uniformly; s refreshed every
    ``every`` epochs from the attribution matrix of the training examples of those epochs (module docstring)."""

    name = "cross_class"
    key = "extra_sampler"
    phase = "signals"

    def __init__(self, data: ExtraData, num_classes: int, every: int = 5, strength: float = 1.0) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        if data.labels is None:
            raise ValueError("the cross_class sampler needs the extra data's labels (provided or pseudo)")
        self.every, self.strength, self.num_classes = every, strength, num_classes
        labels = data.labels
        self.order = torch.argsort(labels, stable=True)  # extra examples grouped by class
        self.counts = torch.bincount(labels, minlength=num_classes)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.need: torch.Tensor | None = None  # s_c at the last refresh
        self._attributions: AttributionAccumulator | None = None  # this epoch's, on this rank
        self._total: tuple[torch.Tensor, torch.Tensor] | None = None  # class sums and counts since the last refresh
        self._saved: dict[str, Any] | None = None  # an unfinished epoch's attributions, until the run starts

    def class_probabilities(self) -> torch.Tensor:
        weights = self.counts.double()
        if self.need is not None:
            need = self.need.double()
            weights = weights * (need / need.mean().clamp_min(1e-12)).clamp_min(0) ** self.strength
        if weights.sum() <= 0:  # no class has any need: draw by the counts
            weights = self.counts.double()
        return weights / weights.sum()

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        classes = torch.multinomial(self.class_probabilities(), n, replacement=True, generator=generator)
        within = (torch.rand(n, generator=generator, dtype=torch.float64) * self.counts[classes]).long()
        return self.order[self.offsets[classes] + within]

    def on_step_end(self, loop: Any, out: Any) -> None:
        if out.features is None:
            return
        if self._attributions is None:
            self._attributions = AttributionAccumulator(loop.model, self.num_classes)
        self._attributions.update(out.features, out.target, out.head_weight)

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if self._attributions is not None:  # this epoch's, summed over ranks: the same total on every rank
            self._attributions.reduce(loop.dist.sum)
            sums, counts = self._attributions.sums, self._attributions.counts
            self._total = (sums, counts) if self._total is None else (self._total[0] + sums, self._total[1] + counts)
            self._attributions = None
        if loop.epoch % self.every == 0 and self._total is not None:
            sums, counts = self._total
            vectors = sums / counts.clamp_min(1)[:, None]  # classes not seen stay zero vectors
            self.need = class_need(cosine_matrix(vectors)).cpu()
            self._total = None
        if self.need is not None:
            row["extra_class_probabilities"] = [round(p, 5) for p in self.class_probabilities().tolist()]

    def state_dict(self) -> dict[str, Any]:
        total = self._total
        return {"need": self.need, "sums": None if total is None else total[0].cpu(),
                "counts": None if total is None else total[1].cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The attributions since the last refresh were summed over ranks when saved: every rank loads them whole."""
        self.need = state["need"]
        self._total = None if state.get("sums") is None else (state["sums"], state["counts"])

    def epoch_state_dict(self) -> dict[str, Any] | None:
        return None if self._attributions is None else self._attributions.state()

    def load_epoch_state_dict(self, state: dict[str, Any]) -> None:
        self._saved = state

    def on_fit_start(self, loop: Any) -> None:
        if self._total is not None:
            self._total = (self._total[0].to(loop.device), self._total[1].to(loop.device))
        if self._saved is not None:
            self._attributions = AttributionAccumulator(loop.model, self.num_classes).load(self._saved)
            self._saved = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "every": self.every, "strength": self.strength}


def extra_stream(cfg: RunConfig, data: ExtraData | None, num_classes: int) -> ExtraStream | None:
    """What the loader draws from the extra data (None without extra data, or with fraction 0)."""
    if data is None or cfg.extra.fraction == 0:
        return None
    sampler = SAMPLERS.build_from(as_component(cfg.extra.sampler, "extra.sampler"), "extra.sampler", data=data,
                                  num_classes=num_classes)
    return ExtraStream(data, cfg.extra.fraction, sampler)


def _sampler_settings(cfg: RunConfig) -> dict[str, Any]:
    """The sampler's name and resolved options, as the run's record keeps them."""
    section = as_component(cfg.extra.sampler, "extra.sampler")
    return {"name": section.name, **SAMPLERS.validate(section.name, section.options, "extra.sampler")}


def describe_extra(cfg: RunConfig, data: ExtraData | None, teacher: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run records about its extra data (methods.json, summary.json, the report)."""
    if data is None:
        return {"source": None}
    x = cfg.extra
    record: dict[str, Any] = {"source": x.source, "examples": len(data), "fraction": x.fraction,
                              "labels": x.labels, "sampler": _sampler_settings(cfg)}
    if teacher:
        record["teacher"] = teacher
    return record
