"""The run's tokenizer: the configured one or one trained on the mixture, kept in the run directory; its task
tokens (TE⊕ENC); the checks that it fits the model and, on a resume, the checkpoint."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from t2t_mtl.config import Config, ConfigError, TokenizerConfig, tokenizer_source
from t2t_mtl.engine import checkpoint as ckpt_io
from t2t_mtl.engine.distributed import DistEnv, barrier
from t2t_mtl.model import model_config

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_special_ids(tokenizer: Any, cfg: Config, saved: Optional[Dict[str, Any]] = None) -> None:
    """ConfigError unless the tokenizer has the padding and end-of-sequence tokens a run needs and, for a pretrained
    model, their ids are the model's: labels, padding masks and the end of generation use the tokenizer's, the
    decoder's start and generation's stop the model's (T5: pad 0, eos 1). A model built from model.dims takes the
    tokenizer's (`special_ids_of`). `saved`: the pretrained model's config dict, as `check_t5_checkpoint` returned
    it (None: read it)."""
    source = run_tokenizer_name(cfg)
    for name, token, example in (("pad_token_id", "padding", "<pad>"), ("eos_token_id", "end-of-sequence", "</s>")):
        if getattr(tokenizer, name) is None:
            raise ConfigError(f"{source} has no {token} token ({name} None), which the model's inputs and targets "
                              f"need: add one (e.g. {example!r}) to its vocabulary and set it as its "
                              f"{name[:-3]} (PreTrainedTokenizerFast(..., {name[:-3]}={example!r}), then "
                              f"save_pretrained), or train one with `t2t-mtl tokenizer train`")
    if cfg.model.name_or_path is None:
        return
    model = model_config(cfg.model, saved)
    for name in ("pad_token_id", "eos_token_id"):
        ours, theirs = getattr(tokenizer, name), getattr(model, name)
        if ours != theirs:
            raise ConfigError(f"{source} has {name} {ours}, but model.name_or_path {cfg.model.name_or_path!r} has "
                              f"{theirs}: " + unfit_tokenizer_advice(
                                  cfg, "a tokenizer with the model's special ids",
                                  ", such as the model's own tokenizer (tokenizer.path unset)"))


def check_vocabulary_fits(tokenizer: Any, cfg: Config, saved: Optional[Dict[str, Any]] = None) -> None:
    """ConfigError when a pretrained model (`model.name_or_path`) has fewer embedding rows than the tokenizer has
    tokens (its `<task:NAME>` tokens left out with model.task_embeddings, which grow the embedding): ids past its
    rows index nothing. Checked before the mixture is tokenized; `build_model` refused it only after. A model built
    from dims is sized by the tokenizer. `saved`: the pretrained model's config dict (None: read it)."""
    if cfg.model.name_or_path is None:
        return
    tokens = vocab_before_task_tokens(tokenizer) if cfg.model.task_embeddings else len(tokenizer)
    rows = model_config(cfg.model, saved).vocab_size
    if tokens > rows:
        raise ConfigError(
            f"{run_tokenizer_name(cfg)} has {tokens} tokens, but model.name_or_path {cfg.model.name_or_path!r} has "
            f"{rows} embedding rows (vocab_size), so the ids from {rows} on would index no row: "
            + unfit_tokenizer_advice(cfg, "the tokenizer the model was trained with",
                                     " (tokenizer.path unset: the model's own)"))


def unfit_tokenizer_advice(cfg: Config, which: str, own: str) -> str:
    """The advice of a refusal of a tokenizer that does not fit the pretrained model: where tokenizer.path named it,
    to use `which` tokenizer, `own` (following it) pointing at the model's own; where the run uses the model's own
    already (tokenizer.path unset), to set tokenizer.path to `which`."""
    if cfg.tokenizer.path:
        return f"use {which}{own}"
    return f"the model's own tokenizer does not fit it; set tokenizer.path to {which}"


def check_model_tokenizer(tokenizer: Any, cfg: Config) -> None:
    """ConfigError when the tokenizer `tokenizer.path` gives is not the one a local pretrained model folder
    (`model.name_or_path`) holds: an id both tokenizers give (task tokens left out) is another token in the model's,
    whose embedding row the model learnt for that one. Ids only one of them gives are not compared (tokens added for
    fine-tuning, a `<task:NAME>` export's); a folder without tokenizer files, or a hub model, is not checked. For a
    fresh run: a resume reads its weights from the checkpoint, not from the folder."""
    from t2t_mtl.engine.tokenizer_match import vocabulary
    from t2t_mtl.tokenizer import TokenizerLoadError, load_tokenizer, missing_tokenizer_files

    folder = cfg.model.name_or_path
    if cfg.tokenizer.path is None or folder is None or not Path(folder).is_dir() or missing_tokenizer_files(folder):
        return
    try:
        own = vocabulary(load_tokenizer(folder))
    except TokenizerLoadError:  # (its files do not load: the configured tokenizer is what the run can use)
        return
    given = vocabulary(tokenizer)
    piece_at = {i: piece for piece, i in own.items()}
    moved = sorted((i, piece) for piece, i in given.items() if i in piece_at and piece_at[i] != piece)
    if moved:
        i, piece = moved[0]
        raise ConfigError(
            f"{run_tokenizer_name(cfg)} is not the tokenizer of model.name_or_path {folder!r}: {len(moved)} of the "
            f"ids both give are other tokens (id {i} is {piece!r} here, {piece_at[i]!r} in the model's), so the model "
            f"would read the embedding it learnt for one token as another's: unset tokenizer.path to train with the "
            f"model's own")


def check_run_tokenizer(tokenizer: Any, cfg: Config, saved: Optional[Dict[str, Any]] = None) -> None:
    """The checks a run's tokenizer passes before the mixture is tokenized, in training and in a transfer study's
    shared tokenizer: `check_special_ids`, `check_own_encoding`, `check_vocabulary_fits` (ConfigError naming what
    to use instead). `saved`: the pretrained model's config dict (None: read it)."""
    check_special_ids(tokenizer, cfg, saved)
    check_own_encoding(tokenizer, cfg)
    check_vocabulary_fits(tokenizer, cfg, saved)


def run_tokenizer_name(cfg: Config) -> str:
    """The run's tokenizer as its messages name it: by tokenizer.path, else as the model's own or the trained one."""
    return (f"tokenizer.path {cfg.tokenizer.path!r}" if cfg.tokenizer.path else
            "the model's own tokenizer" if cfg.model.name_or_path else "the run's tokenizer")


def check_own_encoding(tokenizer: Any, cfg: Config) -> None:
    """ConfigError unless the tokenizer's own encoding of a text is its tokens followed by EOS alone
    (`own_encoding_problem`): training encodes so, evaluation, validation and predict with the tokenizer's own
    special tokens, which must then be the same."""
    from t2t_mtl.tokenizer import own_encoding_problem

    problem = own_encoding_problem(tokenizer)
    if problem:
        eos = tokenizer.eos_token
        raise ConfigError(
            f"{run_tokenizer_name(cfg)} {problem}. Training reads a text as its tokens followed by {eos} alone (as "
            f"T5 does), evaluation, validation and predict as the tokenizer encodes it, so they would score sequences "
            f"the model never trained on: save the tokenizer with a post-processor that appends {eos} alone "
            f"(tokenizers' TemplateProcessing(single='$A {eos}', special_tokens=[('{eos}', {tokenizer.eos_token_id})])"
            f"), or train one with `t2t-mtl tokenizer train`")


def prepare_tokenizer(cfg: Config, run_dir: Path, task_names: Sequence[str], env: DistEnv,
                      fresh: bool = True) -> PreTrainedTokenizerBase:
    """The configured tokenizer (`tokenizer_source`: tokenizer.path, else a pretrained model's own), or one trained
    on the mixture's training texts (each row in every template with data.all_templates, as the run trains it);
    either way the run keeps it in run_dir/tokenizer, where evaluation and export read it (a configured folder may
    change later). A `fresh` run copies the configured tokenizer or trains one anew (over what a run that died
    before its first checkpoint left, which may have other tasks or options); a resumed one reads its own copy.
    Collective: every rank looks for the run's copy before rank 0 writes one, so all take the same path (a rank
    that looked after rank 0 had written it into a new run folder skipped the barrier rank 0 waited at)."""
    from t2t_mtl.tokenizer import TokenizerTrainingError, load_tokenizer, rendered_texts, train_tokenizer

    out = run_dir / "tokenizer"
    source = tokenizer_source(cfg)
    if source is not None:
        kept = not fresh and out.is_dir()
        barrier("the run's tokenizer looked for")  # every rank has looked for the run's copy before rank 0 writes one
        if kept:
            return load_tokenizer(out)
        tokenizer = load_configured_tokenizer(cfg)
        if env.is_main:
            tmp = run_dir / ".tmp-tokenizer"
            shutil.rmtree(tmp, ignore_errors=True)
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
        barrier("the configured tokenizer copied")
        return tokenizer
    if env.is_main and (fresh or not (out / "tokenizer_config.json").exists()):
        import task_registry

        vocab_size, per_task = tokenizer_train_options(cfg)

        def texts():
            for name in task_names:
                yield from rendered_texts(corpus_examples(task_registry.get_task(name), cfg, per_task))

        tmp = run_dir / ".tmp-tokenizer"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            train_tokenizer(texts(), tmp, vocab_size=vocab_size)
        except TokenizerTrainingError as err:  # (the mixture's texts decide which sizes train)
            raise ConfigError(f"tokenizer.train.vocab_size {vocab_size}: {err}") from None
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    barrier("the run's tokenizer trained")
    return load_tokenizer(out)


def corpus_examples(task: Any, cfg: Config, per_task: int) -> Any:
    """The rendered train examples of `task` a trained tokenizer reads: those of its first `per_task` rows, as
    `task.to_dataset("train", max_examples=per_task)` renders them. They are the head of the rendering the training
    streams then make (`data.max_examples_per_task` rows, at least as many, nothing skipped), so they are read from
    it: a first start renders each task once (datasets caches it for the streams), not once more for the tokenizer.
    A rendering that skipped rows (their heads differ) or fewer rows, or datasets' caching turned off (the streams
    would render it again): rendered with `per_task` rows of its own."""
    import datasets

    options = {"templates": cfg.data.templates, "every_template": cfg.data.all_templates, "seed": cfg.training.seed}
    limit = cfg.data.max_examples_per_task
    if datasets.is_caching_enabled() and (limit is None or limit >= per_task):
        rendered = task.to_dataset("train", max_examples=limit, **options)  # (the streams' call: cached for them)
        stats = task.render_stats["train"]
        if stats.skipped == 0:
            return rendered.select(range(min(len(rendered), per_task * stats.per_row)))
    return task.to_dataset("train", max_examples=per_task, **options)


def vocab_before_task_tokens(tokenizer: Any) -> int:
    """The tokenizer's size without the `<task:NAME>` tokens a resumed run's own tokenizer already holds."""
    from t2t_mtl.analysis.task_embeddings import find_task_tokens

    return len(tokenizer) - len(find_task_tokens(tokenizer))


def prepare_task_tokens(tokenizer: Any, task_names: Sequence[str], run_dir: Path, env: DistEnv) -> Any:
    """TE⊕ENC (`model.task_embeddings`): add a `<task:NAME>` token per task to `tokenizer` (in place, task-id
    order) and save that tokenizer to run_dir/tokenizer on rank 0, where export and evaluation find it. A resumed
    run's own copy has them already and is left as it is (a crash while rewriting it would break the resume)."""
    from t2t_mtl.analysis.task_embeddings import TaskTokens

    size = len(tokenizer)
    task_tokens = TaskTokens(tokenizer, task_names)
    barrier("the run's tokenizer read before its task tokens")  # (before rank 0 rewrites run_dir/tokenizer)
    if env.is_main and len(tokenizer) != size:
        tokenizer.save_pretrained(run_dir / "tokenizer")
    return task_tokens


def load_model_tokenizer(cfg: Config) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the pretrained model `model.name_or_path` (tokenizer.path unset); a model without
    one is a ConfigError saying to set tokenizer.path (a tokenizer trained here would not match its embeddings)."""
    from t2t_mtl.tokenizer import TokenizerLoadError, load_tokenizer

    try:
        return load_tokenizer(cfg.model.name_or_path)
    except TokenizerLoadError as err:
        raise ConfigError(f"tokenizer.path is unset, so the run uses the tokenizer of model.name_or_path "
                          f"{cfg.model.name_or_path!r}, which could not be loaded ({err}); set tokenizer.path to the "
                          f"tokenizer the model was trained with") from None


def load_configured_tokenizer(cfg: Config) -> Any:
    """The tokenizer `tokenizer_source(cfg)` names (not None): `tokenizer.path`'s, else the pretrained model's own."""
    from t2t_mtl.tokenizer import load_tokenizer

    return load_model_tokenizer(cfg) if cfg.tokenizer.path is None else load_tokenizer(tokenizer_source(cfg))


def check_resumed_tokenizer(cfg: Config, tokenizer: Any, ckpt: Path) -> None:
    """Refuse to resume checkpoint `ckpt` with another tokenizer than the one its run trained with (the run's copy
    in `tokenizer/` beside its checkpoints): the configured one (`tokenizer_source`) or, without one, `tokenizer`,
    the one this run trained. (A run resumed in place reads its own copy, so the configured one would be ignored;
    resumed into a new folder, the weights would be fed another tokenizer's ids.) Another tokenizer is one with
    another vocabulary, or the same one and another pipeline deciding which of its pieces a text becomes or which
    text predicted ids become (`tokenizer_match.differing_parts`: a lowercasing normalizer would feed the weights
    other ids for the same texts, another decoder score other texts for the same predictions). Task tokens are left
    out of the comparison; a checkpoint whose run folder has no tokenizer copy is not checked. Raises
    CheckpointError."""
    from t2t_mtl.engine.tokenizer_match import decode_difference, differing_parts, probe_difference, vocabulary
    from t2t_mtl.tokenizer import load_tokenizer

    trained_with = Path(ckpt).parent.parent / "tokenizer"
    if not trained_with.is_dir():
        return
    source = tokenizer_source(cfg)
    if source is not None:
        tokenizer = load_configured_tokenizer(cfg)
    run_copy = load_tokenizer(trained_with)
    was, now = vocabulary(run_copy), vocabulary(tokenizer)
    if was == now:
        parts = differing_parts(run_copy, tokenizer)
        encoded, decoded = probe_difference(run_copy, tokenizer), decode_difference(run_copy, tokenizer)
        example = (f"encodes {encoded}" if encoded is not None else
                   f"decodes {decoded}" if decoded is not None else None)
        if not parts and example is None:
            return
        another = (f"one with the same {len(now)} tokens but another {' and another '.join(parts)}" if parts else
                   f"one with the same {len(now)} tokens that " +
                   ("encodes texts otherwise" if encoded is not None else "decodes ids otherwise"))
        if example is not None:
            another += f" (it {example})"
    else:
        differ = sum(now.get(piece) != i for piece, i in was.items())
        another = f"another one ({len(now)} tokens, {differ} of the checkpoint's at other ids or missing)"
    key = "tokenizer.path" if cfg.tokenizer.path is not None else \
        "model.name_or_path" if source is not None else "tokenizer.train"
    given = f"this run's {key} {source!r} gives" if source is not None else f"this run trained ({key})"
    raise ckpt_io.CheckpointError(
        f"checkpoint {ckpt} was trained with the tokenizer in {trained_with} ({len(was)} tokens), {given} "
        f"{another}: resume with tokenizer.path set to {trained_with}, or set training.output_dir to a new directory "
        f"to start a new run")


def tokenizer_train_options(cfg: Config) -> Tuple[int, int]:
    """(vocab_size, max_examples_per_task) of `tokenizer.train`, an option it lacks (a Config edited in Python) the
    schema's (`TokenizerConfig`'s, default.yaml's); unknown options are a ConfigError."""
    from t2t_mtl.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE

    options = {**TokenizerConfig().train, **cfg.tokenizer.train}
    vocab_size = options.pop("vocab_size")
    per_task = options.pop("max_examples_per_task")
    if options:
        raise ConfigError(f"tokenizer.train: unknown option(s) {sorted(options)}; valid: vocab_size, "
                          f"max_examples_per_task")
    for key, value, least in (("vocab_size", vocab_size, MIN_VOCAB_SIZE), ("max_examples_per_task", per_task, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"config key 'tokenizer.train.{key}' must be an integer >= {least}, got {value!r}")
    if vocab_size > MAX_VOCAB_SIZE:
        raise ConfigError(f"config key 'tokenizer.train.vocab_size' must be at most {MAX_VOCAB_SIZE} (SentencePiece's "
                          f"limit), got {vocab_size}")
    return vocab_size, per_task
