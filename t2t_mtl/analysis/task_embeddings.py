"""Task embeddings as task tokens prepended to the encoder input (TE⊕ENC).

One special token `<task:NAME>` per task is added to the tokenizer; the model's (shared) embedding matrix
grows to cover it; every encoder input gets its task's token id in front (the attention mask gets a 1).
The learned rows of the embedding matrix for those tokens are the task embeddings, exported after
training and drawn in 2-D by PCA.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from t2t_mtl.analysis.errors import TaskEmbeddingError
from t2t_mtl.model.t5 import has_own_head, untie_head
from t2t_mtl.wording import counted, repeated_items

TASK_TOKEN_PATTERN = re.compile(r"^<task:(.+)>$")


def task_token(task_name: str) -> str:
    """The special token string of a task: `<task:NAME>`."""
    if not task_name or re.search(r"\s|>", task_name):
        raise TaskEmbeddingError(f"task name {task_name!r} cannot become a task token: it must be non-empty "
                                 f"and contain no whitespace or '>'")
    return f"<task:{task_name}>"


def add_task_tokens(tokenizer: Any, task_names: Sequence[str]) -> dict[str, int]:
    """Add one special token per task to `tokenizer` (idempotent) and return {task: token id}.

    Raises TaskEmbeddingError when a task is listed twice or a token does not become a single id.
    """
    dupes = repeated_items(task_names)
    if dupes:
        raise TaskEmbeddingError(f"task(s) {dupes} listed more than once")
    tokens = [task_token(t) for t in task_names]
    vocab = tokenizer.get_vocab()
    new = [tok for tok in tokens if tok not in vocab]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    ids = {t: tokenizer.convert_tokens_to_ids(tok) for t, tok in zip(task_names, tokens)}
    unk = getattr(tokenizer, "unk_token_id", None)
    bad = {t: i for t, i in ids.items() if i is None or i == unk}
    if bad:
        raise TaskEmbeddingError(f"task tokens for {sorted(bad)} did not get their own id in the tokenizer")
    return ids


def find_task_tokens(tokenizer: Any) -> dict[str, int]:
    """{task: token id} of every `<task:NAME>` token in the tokenizer, ordered by id."""
    found = {m.group(1): idx for tok, idx in tokenizer.get_vocab().items() if (m := TASK_TOKEN_PATTERN.match(tok))}
    return dict(sorted(found.items(), key=lambda item: item[1]))


def resize_for_task_tokens(model: torch.nn.Module, tokenizer: Any, *, mean_resizing: bool = True) -> int:
    """Grow the model's token embeddings (and tied/untied LM head) to cover every tokenizer id, the new rows drawn
    around the old rows' mean and covariance (transformers' mean resizing), or, with `mean_resizing=False`, as the
    model's init draws them (for a model whose weights a load fills next, as on the meta device, which has no values
    to take a mean of).

    Never shrinks (T5 checkpoints carry spare rows beyond `len(tokenizer)`). Returns the row count.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        head = model.get_output_embeddings()
        own_head = has_own_head(model)
        trains = (model.get_input_embeddings().weight.requires_grad, head is not None and head.weight.requires_grad)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=mean_resizing)
        embedding = model.get_input_embeddings()
        if own_head and not has_own_head(model):
            # transformers 5 ties T5's head to the embedding when resizing: keep an untied (T5 v1.1) head its own
            # pretrained rows, the new rows starting as the new embedding rows
            untie_head(model)
            with torch.no_grad():
                model.get_output_embeddings().weight[:head.weight.shape[0]].copy_(head.weight)
        if head is not None:  # the new matrices train as the old ones did (a LoRA model's untied head is frozen)
            model.get_output_embeddings().weight.requires_grad_(trains[1])
        embedding.weight.requires_grad_(trains[0])
        rows = embedding.weight.shape[0]
    return rows


def task_token_table(task_names: Sequence[str], token_ids: Mapping[str, int]) -> torch.Tensor:
    """LongTensor [T]: entry i is the token id of `task_names[i]` (the engine's task index order)."""
    missing = [t for t in task_names if t not in token_ids]
    if missing:
        raise TaskEmbeddingError(f"no task token for task(s) {missing}: call add_task_tokens with every "
                                 f"training task")
    return torch.tensor([token_ids[t] for t in task_names], dtype=torch.long)


def prepend_task_tokens(batch: Mapping[str, Any], token_table: torch.Tensor) -> dict[str, Any]:
    """Return a copy of `batch` whose input_ids/attention_mask start with each example's task token.

    `batch["task_ids"]` (LongTensor [B]) indexes `token_table` (from `task_token_table`); the sequence
    length grows by one. Other entries (labels, task_ids, ...) are passed through unchanged.
    """
    for key in ("input_ids", "task_ids"):
        if key not in batch:
            raise TaskEmbeddingError(f"batch has no {key!r} (keys: {sorted(batch)}): task tokens need both "
                                     f"input_ids and task_ids")
    input_ids, task_ids = batch["input_ids"], batch["task_ids"]
    if task_ids.dim() != 1 or task_ids.shape[0] != input_ids.shape[0]:
        raise TaskEmbeddingError(f"task_ids has shape {tuple(task_ids.shape)}, expected [{input_ids.shape[0]}]")
    if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= token_table.numel()):
        raise TaskEmbeddingError(f"task_ids range {int(task_ids.min())}..{int(task_ids.max())} outside the "
                                 f"{counted(token_table.numel(), 'task')} that have task tokens")
    prefix = token_table.to(input_ids.device)[task_ids].unsqueeze(1).to(input_ids.dtype)
    out = dict(batch)
    out["input_ids"] = torch.cat([prefix, input_ids], dim=1)
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    out["attention_mask"] = torch.cat([torch.ones_like(prefix, dtype=mask.dtype), mask], dim=1)
    return out


def prefix_task_token(text: str, task_name: str) -> str:
    """`text` with the task's token in front, for code paths that tokenize text (evaluation, generation):
    tokenizing the result gives the same ids as `prepend_task_tokens` on the tokenized `text`."""
    return f"{task_token(task_name)} {text}"


class TaskTokens:
    """TE⊕ENC for one run: the task tokens of `task_names` (engine task-index order) added to `tokenizer`.

    `resize(model)` grows the embeddings to cover them, `__call__(batch)` prepends each example's task token
    (by `batch["task_ids"]`), `prefix(text, task)` does the same for code that tokenizes text.
    """

    def __init__(self, tokenizer: Any, task_names: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.task_names = list(task_names)
        self.token_ids = add_task_tokens(tokenizer, self.task_names)
        self.table = task_token_table(self.task_names, self.token_ids)

    def resize(self, model: torch.nn.Module, *, mean_resizing: bool = True) -> int:
        """Grow `model`'s embeddings to cover the task tokens (never shrinks; `mean_resizing`: as
        `resize_for_task_tokens`); returns the embedding row count."""
        return resize_for_task_tokens(model, self.tokenizer, mean_resizing=mean_resizing)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return prepend_task_tokens(batch, self.table)

    def prefix(self, text: str, task_name: str) -> str:
        """`text` with `task_name`'s task token in front; raises `TaskEmbeddingError` for a task without one."""
        if task_name not in self.token_ids:
            raise TaskEmbeddingError(f"task {task_name!r} has no task token (tasks: {self.task_names})")
        return prefix_task_token(text, task_name)


def task_embedding_matrix(model: torch.nn.Module, token_ids: Mapping[str, int]) -> tuple[list[str], torch.Tensor]:
    """(task names, float32 [T, d] rows of the input embedding matrix for their task tokens)."""
    weight = model.get_input_embeddings().weight
    names = list(token_ids)
    too_big = {t: i for t, i in token_ids.items() if i >= weight.shape[0]}
    if too_big:
        raise TaskEmbeddingError(f"task token ids {too_big} exceed the model's {weight.shape[0]} embedding rows: "
                                 f"call resize_for_task_tokens before training")
    index = torch.tensor([token_ids[t] for t in names], dtype=torch.long, device=weight.device)
    return names, weight.detach()[index].float().cpu()


def pca_2d(matrix: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows onto their first two principal components: (coords [T, 2], explained variance ratio [2]).

    Signs are fixed so each component's largest-magnitude loading is positive; missing components (fewer
    than 3 rows or rank < 2) are zeros.
    """
    x = torch.as_tensor(np.asarray(matrix), dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] < 2:
        raise TaskEmbeddingError(f"PCA needs at least 2 embeddings, got shape {tuple(x.shape)}")
    centered = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    comps = vh[:2]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    signs[signs == 0] = 1
    comps = comps * signs
    coords = centered @ comps.T
    total = float((s ** 2).sum())
    ratio = (s[:2] ** 2 / total).numpy() if total > 0 else np.zeros(min(2, s.numel()))
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1], dtype=coords.dtype)], 1)
        ratio = np.concatenate([ratio, np.zeros(2 - ratio.size)])
    return coords.numpy(), ratio


def plot_task_embeddings(names: Sequence[str], coords: np.ndarray, ratio: np.ndarray, path: Path) -> Path:
    """Scatter plot of the 2-D task embeddings, each point labelled with its task."""
    from t2t_mtl.analysis.plotting import figure_and_axes, save_figure

    fig, ax = figure_and_axes((6, 5))
    ax.scatter(coords[:, 0], coords[:, 1], s=40)
    for name, (x, y) in zip(names, coords):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% var)")
    ax.set_title("Task embeddings (TE⊕ENC task tokens), PCA")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def export_task_embeddings(model: torch.nn.Module, tokenizer: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write task_embeddings.json (vectors, 2-D coordinates, cosine matrix) and task_embeddings.png."""
    token_ids = find_task_tokens(tokenizer)
    if len(token_ids) < 2:
        found = (f"the task embedding of one task only ({next(iter(token_ids))!r}), nothing to compare it with"
                 if token_ids else "no task embeddings (its tokenizer holds no <task:NAME> token)")
        raise TaskEmbeddingError(f"the model has {found}: train with `model.task_embeddings: true` on at least 2 "
                                 f"tasks")
    names, vectors = task_embedding_matrix(model, token_ids)
    coords, ratio = pca_2d(vectors)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "tasks": names,
        "token_ids": [token_ids[t] for t in names],
        "embeddings": vectors.tolist(),
        "pca_2d": coords.tolist(),
        "explained_variance_ratio": [float(r) for r in ratio],
        "cosine": (unit @ unit.T).tolist(),
    }
    paths = {"json": out / "task_embeddings.json", "plot": out / "task_embeddings.png"}
    paths["json"].write_text(json.dumps(payload, indent=2))
    plot_task_embeddings(names, coords, ratio, paths["plot"])
    return paths
