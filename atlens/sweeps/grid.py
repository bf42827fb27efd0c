"""Grids of runs: ``--grid key=v1,v2`` expansion, run names from parameters, and per-point status."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from atlens.config import RunConfig, load_config
from atlens.errors import ConfigError
from atlens.runs import RunDirectory
from atlens.training.build import check


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``milestones=[0.5,0.75],[0.3,0.6]`` gives two values."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if depth or any(not v for v in values):
        raise ConfigError(f"--grid values must be a comma-separated list, got {text!r}")
    return values


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid expects key=v1,v2,..., got {spec!r}")
        grid.append((key.strip(), split_values(text)))
    keys = [k for k, _ in grid]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--grid names a key twice: {', '.join(keys)}")
    return grid


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text.replace("/", "_")).strip("_")


@dataclass(frozen=True)
class GridPoint:
    name: str
    overrides: tuple[str, ...]  # key=value strings, as --set takes them


def grid_points(grid: list[tuple[str, list[str]]]) -> list[GridPoint]:
    """The Cartesian product, each point named by its parameters (``epsilon-2_255__lr-0.1``); a key is
    shortened to its last component unless two keys of the grid share it."""
    leaves = [key.rsplit(".", 1)[-1] for key, _ in grid]
    labels = [leaf if leaves.count(leaf) == 1 else key for leaf, (key, _) in zip(leaves, grid)]
    points = []
    for values in itertools.product(*(values for _, values in grid)):
        name = "__".join(f"{_slug(label)}-{_slug(value)}" for label, value in zip(labels, values))
        points.append(GridPoint(name, tuple(f"{key}={value}" for (key, _), value in zip(grid, values))))
    return points


def point_config(config: str | Path, base: list[str], point: GridPoint) -> RunConfig:
    """The point's config, with every component built and range-checked (no data is loaded)."""
    return check(load_config(config, list(base) + list(point.overrides)))


def status(run_path: Path) -> str:
    """``finished``, ``partial`` or ``new`` (see ``RunDirectory.status``)."""
    return RunDirectory(run_path).status()
