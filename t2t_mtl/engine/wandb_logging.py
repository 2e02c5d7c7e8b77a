"""Weights & Biases logging (`training.wandb`): the scalars TensorBoard gets, sent to one W&B run per t2t-mtl run.

`training.wandb: {project: my-project, entity: null, name: null, group: null, tags: [], notes: null,
mode: online | offline | disabled}` (rank 0 only; null or false: off). A run that fails is marked failed. The
W&B run id is kept in `<output_dir>/logs/wandb_run_id`, so a resumed run (`--resume`) continues the same W&B run
(a fresh run starts a new one); its files go to `<output_dir>/logs/wandb/`. The run's config is the t2t-mtl
config. Zero-shot evaluations are plotted against their own `held_out/step` axis (the after-training one scores
the keep_best checkpoint, an earlier step than the last logged).

W&B refuses a step lower than one it already has, so the last step sent is kept in `logs/wandb_step`: a run
resumed after a crash sends only the steps W&B has not got (the steps it repeats keep the values sent first,
which a resumed run reproduces), and every row goes at an explicit step above those of earlier processes (a
zero-shot evaluation a SIGTERM deferred to the resumed run shares the row of its first step). Offline, each
start writes its own `logs/wandb/offline-run-*` folder of the same run id with disjoint steps: sync them
together (`wandb sync logs/wandb/offline-run-*`, which uploads the folders of one run in order of start time).
"""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from t2t_mtl.config import ConfigError
from t2t_mtl.config_types import unknown_key_message

WANDB_KEYS = ("project", "entity", "name", "group", "tags", "notes", "mode")
WANDB_MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id"
STEP_FILE = "wandb_step"

logger = logging.getLogger(__name__)


def check_wandb_section(section: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The validated `training.wandb` section (None or false: off). Raises ConfigError naming the key, or when
    the `wandb` package is not installed."""
    if section is None or section is False:
        return None
    unknown = unknown_key_message("training.wandb", section, WANDB_KEYS) if isinstance(section, Mapping) else None
    if unknown:  # first: a misspelt `project` is what a missing project comes from
        raise ConfigError(unknown)
    if not isinstance(section, Mapping) or not section.get("project"):
        raise ConfigError("training.wandb needs at least a project: {project: NAME} (optional: entity, name, group, "
                          "tags, notes, mode: online|offline|disabled)")
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
    `add_held_out({tag: value}, step)` for zero-shot evaluations (own x-axis), `close()` finishes the run.
    `resumed`: continue the W&B run of `log_dir` (else start a new one)."""

    def __init__(self, section: Mapping[str, Any], log_dir: Path, config: Mapping[str, Any],
                 resumed: bool = True) -> None:
        import wandb

        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        id_file, self.step_file = log_dir / RUN_ID_FILE, log_dir / STEP_FILE
        if not resumed or not id_file.exists():
            id_file.write_text(secrets.token_hex(8))
            self.step_file.unlink(missing_ok=True)
        self.sent = int(self.step_file.read_text()) if self.step_file.exists() else -1  # the last step W&B got
        self.row_open = False  # whether the row at `sent` is this process's (W&B merges later data into it)
        self.skipping = False
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
        """Log a training record at `step`, unless W&B already got that step (a resumed run repeating it)."""
        if step > self.sent or (step == self.sent and self.row_open):
            self._log(dict(scalars), step)
        elif not self.skipping:
            self.skipping = True
            logger.warning("W&B already has the steps up to %d (sent before this resume; it refuses lower steps): "
                           "steps %d-%d keep the values sent first there (logs/metrics.jsonl has the resumed run's)",
                           self.sent, step, self.sent)

    def add_held_out(self, scalars: Mapping[str, float], step: int) -> None:
        """Log a zero-shot evaluation on the `held_out/step` axis, in the open row or the next new one."""
        self._log({**scalars, "held_out/step": step}, max(step, self.sent if self.row_open else self.sent + 1))

    def _log(self, scalars: Dict[str, Any], step: int) -> None:
        self.run.log(scalars, step=step)
        if step != self.sent:
            tmp = self.step_file.with_name(f".{STEP_FILE}.tmp")
            tmp.write_text(str(step))
            os.replace(tmp, self.step_file)
        self.sent, self.row_open = step, True

    def close(self, failed: bool = False) -> None:
        """Finish the W&B run; `failed` marks it failed (exit code 1)."""
        self.run.finish(exit_code=1 if failed else 0)
