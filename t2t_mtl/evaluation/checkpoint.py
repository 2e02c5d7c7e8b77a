"""Loading a model and tokenizer to evaluate: a run/checkpoint dir (through the engine) or an HF folder; and whether
its MoE routing kernels can run on the device it is moved to (`check_routing_device`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from safetensors import SafetensorError

from t2t_mtl.evaluation.errors import CheckpointError
from t2t_mtl.model_folder import (MODEL_CONFIG_FILE, T5_MODEL_TYPES, is_model_folder, is_t5_model_type,
                                  not_a_t5)
from t2t_mtl.wording import one_line

# what loading raises for a folder or weights file that is missing, unreadable or cut short (safetensors raises
# its own SafetensorError for a truncated or corrupt file)
LOAD_ERRORS = (OSError, ValueError, KeyError, SafetensorError)


def _check_hf_folder(path: Path) -> None:
    """A CheckpointError unless model folder `path`'s config.json is JSON naming a T5-family model type or none (a
    T5's, as training reads it: `is_t5_model_type`)."""
    config_file = path / MODEL_CONFIG_FILE
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint {str(config_file)!r} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {str(config_file)!r} is a JSON {type(config).__name__}, not the JSON object "
                              f"of a model config; pass a folder written whole by save_pretrained or `t2t-mtl "
                              f"export`, a run directory or a checkpoint")
    model_type = config.get("model_type")
    if not is_t5_model_type(model_type):
        raise CheckpointError(f"checkpoint {str(path)!r} {not_a_t5(model_type)}")


def load_checkpoint(path: Union[str, Path]) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, meta) for a run dir, checkpoint dir or HF folder.

    Goes through `t2t_mtl.engine.export.load_trained_model` (run dirs, checkpoint dirs, exported or Hugging Face
    model folders, with their training meta when they have one). A folder with a config.json is checked to hold a
    T5-family model first, and a run or checkpoint folder to name one (`checked_checkpoint`).
    """
    path = checked_checkpoint(path)
    from t2t_mtl.engine.export import load_trained_model

    try:
        model, tokenizer, meta = load_trained_model(path)
    except LOAD_ERRORS as error:
        raise _unloadable(path, error) from error
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in T5_MODEL_TYPES:
        raise CheckpointError(f"checkpoint {str(path)!r} {not_a_t5(model_type)}")
    model.eval()
    return model, tokenizer, dict(meta or {}, path=str(path))


def check_routing_device(model: Any, device: Any, path: Union[str, Path]) -> None:
    """CheckpointError naming model.moe.backend, what to set it to and where it is kept when the MoE routing kernels
    of `model` (loaded from `path`) cannot run on `device` (was the kernels' own error at the first forward, naming
    neither): backend triton without CUDA or TRITON_INTERPRET=1, auto on CUDA where Triton failed to import, or more
    experts than the Triton kernels take (on CUDA auto runs them too: 'reference' alone routes them). Task routing
    runs none."""
    moe = getattr(model, "moe_config", None)
    if moe is None or moe.routing == "task":
        return
    from t2t_kernels.moe import MoEKernelError, check_backend

    try:
        check_backend(moe.backend, device, moe.num_experts)
    except MoEKernelError as error:
        try:
            check_backend("auto", device, moe.num_experts)
            remedy = "'auto' or 'reference'"
        except MoEKernelError:
            remedy = "'reference'"
        raise CheckpointError(f"checkpoint {str(path)!r} routes its MoE layers with model.moe.backend "
                              f"{moe.backend!r}, which cannot run here ({error}): set it to {remedy} in the "
                              f"model.moe of the run's config.yaml, or the moe of a model folder's config.json"
                              ) from None


def checked_checkpoint(path: Union[str, Path]) -> Path:
    """`path` as a Path where it names a model `load_checkpoint` can try to load: a model folder holding a T5-family
    model, or a run or checkpoint folder naming a checkpoint (a run's latest); else a CheckpointError as
    `load_checkpoint`'s. Imports neither torch nor transformers, so a command refuses such a path before either."""
    path = _checked_folder(path)
    if not is_model_folder(path):
        from t2t_mtl.engine.model_meta import checkpoint_of

        try:
            checkpoint_of(path)
        except LOAD_ERRORS as error:
            raise _unloadable(path, error) from error
    return path


def folder_vocab_size(path: Union[str, Path]) -> Optional[int]:
    """The vocabulary size the config.json of model folder `path` gives, read without loading the model (what the
    loaded model's is), so that what depends on it is checked first; None where `path` is no model folder (a run or
    checkpoint folder, whose model is sized once built) or its config.json gives no integer vocab_size."""
    if not is_model_folder(path):
        return None
    try:
        vocab_size = json.loads((Path(path) / MODEL_CONFIG_FILE).read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError, AttributeError):  # (load_checkpoint names these)
        return None
    return vocab_size if isinstance(vocab_size, int) and not isinstance(vocab_size, bool) else None


def checkpoint_meta(path: Union[str, Path]) -> dict[str, Any]:
    """The meta `load_checkpoint(path)` returns (with the run's config under "config"), read without loading the
    model or tokenizer, so that the settings and tasks it chooses are checked first; a CheckpointError as
    `load_checkpoint`'s for a path that is no checkpoint."""
    path = _checked_folder(path)
    from t2t_mtl.engine.model_meta import trained_model_meta

    try:
        meta = trained_model_meta(path)
    except LOAD_ERRORS as error:
        raise _unloadable(path, error) from error
    return dict(meta, path=str(path))


def _unloadable(path: Path, error: Exception) -> CheckpointError:
    """The error of checkpoint `path`, which loading or reading it failed on with `error` (one of `LOAD_ERRORS`)."""
    return CheckpointError(f"checkpoint {str(path)!r} could not be loaded: {one_line(error)}")


def _checked_folder(path: Union[str, Path]) -> Path:
    """`path` as a Path; a CheckpointError when it is missing, not a folder, or a model folder not holding a
    T5-family model."""
    path = Path(path)
    if not path.exists():  # (predict imports no task_registry otherwise: slow, and only wanted for the hint)
        from task_registry.path_hints import path_hint

        raise CheckpointError(f"checkpoint {str(path)!r} does not exist{path_hint(path)}")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a folder (a run dir, checkpoint dir or HF folder)")
    if is_model_folder(path):
        _check_hf_folder(path)
    return path
