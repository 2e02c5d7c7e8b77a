"""How a tokenizer encodes a fixed set of probe texts in each way `tokenize_dataset` encodes a text: what the tokenized
cache's key (`tokenize.tokenizer_fingerprint`) and a resume's tokenizer check (`t2t_mtl.engine.tokenizer_match`) both
read of a tokenizer's behaviour, beside its serialisation. The probe sees what no serialisation holds: the Python side
of a tokenizer (a slow one's init options, `truncation_side`, `split_special_tokens`, a target mode of its own)."""
from __future__ import annotations

import warnings
from typing import Any

#: texts whose encodings show a difference by example: case, accents and compatibility forms, whitespace, digits and
#: punctuation, special tokens written in the text
PROBE_TEXTS = ("The Cat sat on the Mat.", "Café naïve ﬁne ＡＢＣ", "two  spaces\tand\na line",
               "3.14 + 2,000 = 2003.14!", "fill <extra_id_0> in</s>")
#: the length the first probe text is cut to with the tokenizer's own truncation (from its `truncation_side`)
PROBE_MAX_LENGTH = 4
#: the ways a text is encoded, as a message names them, and the tokenizer's keywords for each
_WAYS = (("", {}), ("without special tokens", {"add_special_tokens": False}),
         (f"cut to {PROBE_MAX_LENGTH} tokens", {"max_length": PROBE_MAX_LENGTH, "truncation": True}))
_FIELDS = (("text", ""), ("text_target", "as a target"))


def splits_special_tokens(tokenizer: Any) -> bool:
    """Whether the tokenizer splits a special token written in a text into pieces: its Python side's
    `split_special_tokens` or its backend's `encode_special_tokens` (set apart, they need not agree)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return bool(getattr(tokenizer, "split_special_tokens", False) or getattr(backend, "encode_special_tokens", False))


def probe_texts(tokenizer: Any) -> tuple[str, ...]:
    """`PROBE_TEXTS` and one text of the tokenizer's own named special tokens (eos, pad, unk, ...), as written."""
    named = [token for key, token in (getattr(tokenizer, "special_tokens_map", None) or {}).items()
             if key.endswith("_token") and isinstance(token, str)]
    return PROBE_TEXTS + ((" ".join(named),) if named else ())


def probe_encodings(tokenizer: Any) -> list[tuple[str, list[int]]]:
    """(the probe as a message names it, its ids) for each probe text encoded as an input and as a target, with the
    tokenizer's special tokens, without them, and (the first text) cut to `PROBE_MAX_LENGTH` tokens: e.g.
    ("'The Cat sat on the Mat.' (as a target, cut to 4 tokens)", [37, 1712, 3, 1]). Two tokenizers with the same
    list encode these texts alike in every way the tokenized cache's rows are encoded."""
    texts = probe_texts(tokenizer)
    out = []
    with warnings.catch_warnings():  # (texts holding special tokens are the point: a tokenizer may warn of them)
        warnings.simplefilter("ignore")
        for field, as_field in _FIELDS:
            for way, options in _WAYS:
                for text in texts[:1] if options.get("truncation") else texts:
                    how = ", ".join(part for part in (as_field, way) if part)
                    ids = tokenizer(**{field: text}, verbose=False, **options)["input_ids"]
                    out.append((f"{text!r}" + (f" ({how})" if how else ""), [int(i) for i in ids]))
    return out
