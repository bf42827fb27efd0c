"""Teachers for distillation: given as run directories or checkpoints, or trained first (chained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlens.errors import ConfigError


def resolve_teacher(run_path: Path, role: str, spec: Any) -> Path:
    """A run directory or checkpoint path for ``spec``. ``{config: FILE, set: [KEY=VALUE, ...]}`` is
    trained into RUN/teachers/<role> first (resumed if interrupted, skipped once finished)."""
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.exists():
            raise ConfigError(f"criterion.{role}_teacher: {path} does not exist (give a run directory, a "
                              f"checkpoint file, or {{config: FILE}} to train it first)")
        return path
    if not isinstance(spec, dict) or "config" not in spec or set(spec) - {"config", "set"}:
        raise ConfigError(f"criterion.{role}_teacher: expected a path or a mapping with keys config (and set)")
    from atlens.config import load_config
    from atlens.training.trainer import Trainer

    out = run_path / "teachers" / role
    if (out / "summary.json").is_file():
        return out
    cfg = load_config(spec["config"], list(spec.get("set", [])))
    trainer = Trainer(cfg, out)
    if (out / "checkpoints" / "last.pt").is_file():
        trainer.resume()
    else:
        trainer.start()
    print(f"training the {role} teacher in {out}")
    trainer.fit()
    return out
