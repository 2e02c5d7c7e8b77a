"""Weights & Biases logging (`training.wandb`): the scalars TensorBoard gets, sent to one W&B run per t2t-mtl run.

`training.wandb: {project: my-project, entity: null, name: null, group: null, tags: [], notes: null,
mode: online | offline | disabled}` (rank 0 only; null or false: off). A run that fails is marked failed. The
W&B run id is kept in `<output_dir>/logs/wandb_run_id`, so a resumed run (`--resume`) continues the same W&B run;
its files go to `<output_dir>/logs/wandb/`. The run's config is the t2t-mtl config. Zero-shot evaluations are
plotted against their own `held_out/step` axis (the after-training one scores the keep_best checkpoint, an
earlier step than the last logged).
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from t2t_mtl.config import ConfigError, unknown_key_message

WANDB_KEYS = ("project", "entity", "name", "group", "tags", "notes", "mode")
WANDB_MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id"


def check_wandb_section(section: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The validated `training.wandb` section (None or false: off). Raises ConfigError naming the key, or when
    the `wandb` package is not installed."""
    if section is None or section is False:
        return None
    if not isinstance(section, Mapping) or not section.get("project"):
        raise ConfigError("training.wandb needs at least a project: {project: NAME} (optional: entity, name, group, "
                          "tags, notes, mode: online|offline|disabled)")
    unknown = unknown_key_message("training.wandb", section, WANDB_KEYS)
    if unknown:
        raise ConfigError(unknown)
    for key in ("project", "entity", "name", "group", "notes"):
        if section.get(key) is not None and not isinstance(section[key], str):
            raise ConfigError(f"training.wandb.{key}={section[key]!r}: must be a string")
    tags = section.get("tags", [])
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"training.wandb.tags={tags!r}: must be a list of strings")
    mode = section.get("mode", "online")
    if mode not in WANDB_MODES:
        raise ConfigError(f"training.wandb.mode={mode!r}: use one of {', '.join(WANDB_MODES)}")
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("training.wandb needs the wandb package: pip install 't2t-mtl[wandb]' (or pip install "
                          "wandb), or remove training.wandb") from None
    return {"tags": [], "mode": "online", **section}


class WandbWriter:
    """A W&B run taking scalar series: `add_scalars({tag: value}, step)` for training records,
    `add_held_out({tag: value}, step)` for zero-shot evaluations (own x-axis), `close()` finishes the run."""

    def __init__(self, section: Mapping[str, Any], log_dir: Path, config: Mapping[str, Any]) -> None:
        import wandb

        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        id_file = log_dir / RUN_ID_FILE
        if not id_file.exists():
            id_file.write_text(secrets.token_hex(8))
        try:
            self.run = wandb.init(project=section["project"], entity=section.get("entity"),
                                  name=section.get("name"), group=section.get("group"),
                                  tags=list(section.get("tags", [])), notes=section.get("notes"),
                                  mode=section.get("mode", "online"), dir=str(log_dir),
                                  id=id_file.read_text().strip(), resume="allow", config=dict(config))
        except Exception as err:  # no login, no network, a bad entity: wandb raises many kinds
            raise ConfigError(f"training.wandb: W&B could not start the run ({type(err).__name__}: "
                              f"{str(err).strip()[:300]}); log in (`wandb login` or WANDB_API_KEY), or set "
                              f"training.wandb.mode: offline (sync later with `wandb sync`)") from None
        self.run.define_metric("held_out/step")
        self.run.define_metric("held_out/*", step_metric="held_out/step")

    def add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def add_held_out(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log({**scalars, "held_out/step": step})

    def close(self, failed: bool = False) -> None:
        """Finish the W&B run; `failed` marks it failed (exit code 1)."""
        self.run.finish(exit_code=1 if failed else 0)
