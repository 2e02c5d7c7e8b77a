"""Whether two tokenizers give a text the same token ids and the ids the same text: their vocabularies, the
pipeline that decides which of its pieces a text becomes (normalizer, pre-tokenizer, model, post-processor, added
tokens), how it encodes the probe texts the tokenized cache's key reads (`task_registry.tokenizer_probe`) and the
decoder that turns predicted ids back into text. The trainer's `<task:NAME>` tokens are left out: a
run adds them to its own copy, and no text holds them."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from task_registry.tokenizer_probe import PROBE_TEXTS, probe_encodings, splits_special_tokens

#: the parts of a fast tokenizer's serialisation that decide the ids of a text or the text of predicted ids (the
#: decoder), as a message names them (truncation and padding are set by each call; version is the format's)
PIPELINE_PARTS = {"normalizer": "normalizer", "pre_tokenizer": "pre-tokenizer", "model": "model",
                  "post_processor": "post-processor", "added_tokens": "added tokens",
                  "encode_special_tokens": "special-token splitting (split_special_tokens)", "decoder": "decoder"}


def vocabulary(tokenizer: Any) -> Dict[str, int]:
    """{piece: id} of the tokenizer's vocabulary without its `<task:NAME>` tokens."""
    from t2t_mtl.analysis.task_embeddings import find_task_tokens

    task_ids = set(find_task_tokens(tokenizer).values())
    return {piece: i for piece, i in tokenizer.get_vocab().items() if i not in task_ids}


def differing_parts(was: Any, now: Any) -> List[str]:
    """The parts of `PIPELINE_PARTS` in which fast tokenizer `now` differs from `was`, each as a message names it
    with what it is in both (e.g. "normalizer (Lowercase; the checkpoint's: none)"); [] when either tokenizer has
    no serialisation (no `backend_tokenizer`) to compare."""
    ours, theirs = _pipeline_state(now), _pipeline_state(was)
    if ours is None or theirs is None:
        return []
    parts = []
    for key, name in PIPELINE_PARTS.items():
        if ours.get(key) != theirs.get(key):
            parts.append(f"{name} ({_describe(key, ours.get(key), theirs.get(key))})")
    return parts


def probe_difference(was: Any, now: Any) -> Optional[str]:
    """How tokenizer `now` encodes the first probe that it encodes otherwise than `was`, of those the tokenized cache's
    key reads (`task_registry.tokenizer_probe.probe_encodings`: each probe text with its special tokens first), e.g.
    "'The Cat' as ▁the ▁cat </s>, the checkpoint's as ▁The ▁Cat </s>"; None when every probe gets the same ids."""
    for (probe, ours), (_, theirs) in zip(probe_encodings(now), probe_encodings(was)):
        if ours != theirs:
            return (f"{probe} as {' '.join(now.convert_ids_to_tokens(ours))}, the checkpoint's as "
                    f"{' '.join(was.convert_ids_to_tokens(theirs))}")
    return None


def decode_difference(was: Any, now: Any) -> Optional[str]:
    """How tokenizer `now` decodes the ids `was` gives the first of `PROBE_TEXTS` whose ids it decodes otherwise
    (special tokens skipped, as generation's predictions are), e.g. "the ids of 'The Cat' as 'TheCat', the
    checkpoint's as 'The Cat'"; None when every probe text's ids decode alike or either tokenizer cannot decode."""
    if not (callable(getattr(was, "decode", None)) and callable(getattr(now, "decode", None))):
        return None
    for text in PROBE_TEXTS:
        ids = list(was(text)["input_ids"])
        ours, theirs = now.decode(ids, skip_special_tokens=True), was.decode(ids, skip_special_tokens=True)
        if ours != theirs:
            return f"the ids of {text!r} as {ours!r}, the checkpoint's as {theirs!r}"
    return None


def _pipeline_state(tokenizer: Any) -> Optional[Dict[str, Any]]:
    """The `PIPELINE_PARTS` of a fast tokenizer's serialisation, its task tokens left out of the added tokens; None
    without a `backend_tokenizer`."""
    from t2t_mtl.analysis.task_embeddings import TASK_TOKEN_PATTERN

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    state = {key: value for key, value in json.loads(backend.to_str()).items() if key in PIPELINE_PARTS}
    state["added_tokens"] = {token["content"]: token for token in state.get("added_tokens") or []
                             if not TASK_TOKEN_PATTERN.match(token["content"])}
    state["encode_special_tokens"] = splits_special_tokens(tokenizer)  # (as the tokenized cache's key reads it)
    return state


def _describe(key: str, ours: Any, theirs: Any) -> str:
    """What part `key` is in the resumed tokenizer and in the checkpoint's, for a message."""
    if key == "added_tokens":
        new, gone = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        changed = sorted(token for token in set(ours) & set(theirs) if ours[token] != theirs[token])
        said = ([f"{', '.join(new)} not in the checkpoint's"] if new else []) + \
            ([f"{', '.join(gone)} missing"] if gone else []) + \
            ([f"{', '.join(changed)} with other options (id, special, lstrip, rstrip, normalized, single_word)"]
             if changed else [])
        return "; ".join(said)
    if key == "encode_special_tokens":
        return f"{ours}; the checkpoint's: {theirs}"
    shown, shown_theirs = _shape(ours), _shape(theirs)
    if shown == shown_theirs:
        return f"{shown} with other settings" + (" or scores" if key == "model" else "")
    return f"{shown}; the checkpoint's: {shown_theirs}"


def _shape(component: Any) -> str:
    """A serialised tokenizer component by its types: 'none', 'Lowercase', 'Sequence(NFKC, Lowercase)', a
    TemplateProcessing by its single-text template ('TemplateProcessing($A </s>)')."""
    if not isinstance(component, dict):
        return "none"
    kind = str(component.get("type", "untyped"))
    if kind == "TemplateProcessing":
        pieces = [f"${body.get('id')}" if part == "Sequence" else str(body.get("id"))
                  for item in component.get("single") or [] for part, body in item.items()]
        return f"{kind}({' '.join(pieces)})"
    inner = [value for value in component.values() if isinstance(value, list) and value
             and all(isinstance(item, dict) for item in value)]
    if kind == "Sequence" and inner:
        return f"{kind}({', '.join(_shape(item) for item in inner[0])})"
    return kind
