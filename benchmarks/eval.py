"""Rank classification throughput: the encoder run once per example vs re-encoding the input per choice.

Both paths score the same (input, answer choice) pairs with the same batching; the peer expands the
tokenised input to one row per choice and runs the full encoder-decoder on every row (what a
`model(input_ids, labels=choice)` loop does, batched); ours runs the encoder and the decoder's
cross-attention key/value projections once per example and expands them to the choices
(`t2t_mtl.evaluation.rank_classification.score_choices`). Inputs are RTE validation
premises + hypotheses from ../shared/data (real lengths, ~60-100 tokens), choice sets of 2-4 short
answers. Prints examples/s of both and the speedup; scores are checked equal first.

    python benchmarks/eval.py [--examples 64] [--batch-size 16] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

from t2t_mtl.evaluation.labels import target_labels
from t2t_mtl.evaluation.rank_classification import choice_log_likelihoods, evaluation_mode, score_choices
from t2t_mtl.tokenizer import load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHOICE_SETS = {2: ["yes", "no"], 3: ["yes", "no", "maybe"], 4: ["entailment", "contradiction", "neutral", "unknown"]}


def score_choices_reencoding(model, tokenizer, inputs, answer_choices, *, batch_size=16, max_input_length=512):
    """Peer: every (input, choice) row goes through encoder and decoder (examples batched as ours)."""
    scores = []
    with evaluation_mode(model):
        for start in range(0, len(inputs), batch_size):
            batch = range(start, min(start + batch_size, len(inputs)))
            texts = [inputs[i] for i in batch for _ in answer_choices[i]]
            targets = [c for i in batch for c in answer_choices[i]]
            encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_input_length,
                                return_tensors="pt")
            labels = target_labels(tokenizer, targets)  # (right-padded with -100 whatever side the tokenizer pads)
            hidden = model.get_encoder()(input_ids=encoded.input_ids,
                                         attention_mask=encoded.attention_mask).last_hidden_state
            flat = choice_log_likelihoods(model, labels, hidden, encoded.attention_mask).tolist()
            position = 0
            for i in batch:
                scores.append(flat[position:position + len(answer_choices[i])])
                position += len(answer_choices[i])
    return scores


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(SHARED / "tokenizers" / "t5")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=256, d_ff=1024, d_kv=32,
                                                num_heads=8, num_layers=4, pad_token_id=0, eos_token_id=1,
                                                decoder_start_token_id=0)).eval()
    rows = [json.loads(line) for line in (SHARED / "data" / "glue" / "rte" / "validation.jsonl").open()]
    inputs = [f"{r['sentence1']} Question: does this imply that \"{r['sentence2']}\"?" for r in rows[:args.examples]]
    lengths = [len(ids) for ids in tokenizer(inputs).input_ids]
    print(f"T5 d_model 256, 4+4 layers, vocab {len(tokenizer)}; {len(inputs)} RTE inputs, mean "
          f"{sum(lengths) / len(lengths):.0f} tokens; batch {args.batch_size}; {args.threads} threads; "
          f"best of {args.repeats}")
    print("| choices | encoder once (ex/s) | re-encode per choice (ex/s) | speedup |")
    print("|---|---|---|---|")
    for count, options in CHOICE_SETS.items():
        choices = [options] * len(inputs)
        ours = score_choices(model, tokenizer, inputs, choices, batch_size=args.batch_size, max_choice_rows=10 ** 6)
        peer = score_choices_reencoding(model, tokenizer, inputs, choices, batch_size=args.batch_size)
        worst = max(abs(a - b) for x, y in zip(ours, peer) for a, b in zip(x, y))
        assert worst < 1e-3, f"scores differ by {worst}"
        t_ours = best_time(lambda: score_choices(model, tokenizer, inputs, choices, batch_size=args.batch_size,
                                                 max_choice_rows=10 ** 6), args.repeats)
        t_peer = best_time(lambda: score_choices_reencoding(model, tokenizer, inputs, choices,
                                                            batch_size=args.batch_size), args.repeats)
        print(f"| {count} | {len(inputs) / t_ours:.1f} | {len(inputs) / t_peer:.1f} | {t_peer / t_ours:.2f}x |")


if __name__ == "__main__":
    main()
