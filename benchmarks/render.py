"""Render + tokenize throughput (examples/s) of a mixture of built-in tasks, single process.

Three measurements over the same rows (the first `--rows` rows of each task's first split, loaded once):

- `pipeline`: the real path, `Task.to_dataset(split, max_examples=rows)` + `tokenize_dataset` (datasets
  caching disabled, so every run renders and tokenizes; includes reading the rows and Arrow writes);
- `compiled`: `Template.render` (templates compiled once, cached) over the pre-loaded rows, then one batched
  tokenizer call;
- `naive`: the baseline, which re-parses the Jinja template (and its answer-choices template) for every
  example, as promptsource's `Template.apply` does, then the same batched tokenizer call;
- the last two again without tokenization (render only), to isolate the template cost.

The naive and compiled outputs are checked to be identical. Prints examples/s and the speed-up ratios.

    python benchmarks/render.py [--mixture real|procedural] [--rows 300] [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import datasets

import task_registry
from task_registry.jinja_env import parse_uncached, with_truncation
from task_registry.template import PIPE_PROTECTOR, SEPARATOR

REPO = Path(__file__).resolve().parents[1]


def naive_render(template: task_registry.Template, row: dict) -> tuple[str, str, list]:
    """promptsource-style apply: parse the Jinja source on every call (no compile cache)."""
    protected = {k: v.replace(SEPARATOR, PIPE_PROTECTOR) if isinstance(v, str) else v for k, v in row.items()}
    choices = None
    if template.answer_choices is not None:
        rendered_choices = parse_uncached(template.answer_choices).render(protected)
        choices = [c.strip().replace(PIPE_PROTECTOR, SEPARATOR) for c in rendered_choices.split(SEPARATOR)]
    rendered = parse_uncached(with_truncation(template.jinja)).render(dict(protected, answer_choices=choices))
    parts = [p.replace(PIPE_PROTECTOR, SEPARATOR).strip() for p in rendered.split(SEPARATOR)]
    return parts[0], parts[1] if len(parts) > 1 else "", choices or []


def choose(task: task_registry.Task, index: int, seed: int = 0):
    """The template `Task.to_dataset` picks for row `index` (same seeded rule), and its generator."""
    rng = random.Random(f"{seed}:{index}")
    template = task.templates[rng.randrange(len(task.templates))] if len(task.templates) > 1 else task.templates[0]
    return template, rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixture", default=None, help="built-in mixture (default: real when the data dir "
                                                        "exists, else procedural)")
    parser.add_argument("--rows", type=int, default=300, help="rows per task")
    parser.add_argument("--data-dir", default=os.environ.get(task_registry.DATA_DIR_ENV,
                                                             str(REPO.parent / "shared" / "data")))
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared" / "tokenizers" / "t5"))
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()

    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(args.tokenizer)
    has_data = Path(args.data_dir).is_dir()
    if has_data:
        task_registry.set_data_dir(args.data_dir)
    task_registry.load_builtin_tasks()
    mixture = args.mixture or ("real" if has_data else "procedural")
    tasks = [task_registry.get_task(name) for name in sorted(task_registry.get_mixture(mixture).flatten())]
    workload = []
    for task in tasks:
        split = task.splits[0]
        rows = task.load_rows(split)
        rows = [rows[i] for i in range(min(args.rows, len(rows)))]
        workload.append((task, split, rows))
    total = sum(len(rows) for _, _, rows in workload)
    print(f"mixture {mixture!r}: {len(tasks)} tasks, {total} examples ({args.rows} rows max per task), "
          f"{sum(len(t.templates) for t in tasks)} templates; tokenizer {args.tokenizer}")

    tokenize_enabled = [True]

    def tokenize(inputs, targets):
        if tokenize_enabled[0]:
            tokenizer(inputs, max_length=512, truncation=True)
            tokenizer(text_target=targets, max_length=128, truncation=True)

    def run_compiled():
        inputs, targets, outputs = [], [], []
        for task, _, rows in workload:
            for index, row in enumerate(rows):
                template, rng = choose(task, index)
                example = template.render(row, task=task.name, row_index=index, rng=rng)
                inputs.append(example.inputs)
                targets.append(example.targets)
                outputs.append((example.inputs, example.targets, example.answer_choices or []))
        tokenize(inputs, targets)
        return outputs

    def run_naive():
        inputs, targets, outputs = [], [], []
        for task, _, rows in workload:
            for index, row in enumerate(rows):
                template, rng = choose(task, index)
                random.setstate(rng.getstate())  # the unseeded `choice` filter draws from `random`
                out = naive_render(template, row)
                inputs.append(out[0])
                targets.append(out[1])
                outputs.append(out)
        tokenize(inputs, targets)
        return outputs

    def run_pipeline():
        for task, split, rows in workload:
            rendered = task.to_dataset(split, max_examples=len(rows))
            task_registry.tokenize_dataset(rendered, tokenizer, 512, 128)

    datasets.disable_caching()
    datasets.utils.logging.disable_progress_bar()
    def best_of(run) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        return best

    timings = {name: best_of(run) for name, run in
               (("compiled", run_compiled), ("naive", run_naive), ("pipeline", run_pipeline))}
    tokenize_enabled[0] = False
    timings.update({"compiled render only": best_of(run_compiled), "naive render only": best_of(run_naive)})
    compiled, naive = run_compiled(), run_naive()
    differ = sum(a != b for a, b in zip(compiled, naive))
    print(f"outputs identical (compiled vs naive): {differ == 0}" + (f" ({differ} differ)" if differ else ""))
    for name in ("pipeline", "compiled", "naive", "compiled render only", "naive render only"):
        print(f"{name:>20}: {total / timings[name]:10.0f} examples/s  ({timings[name]:.3f} s)")
    print(f"ratio compiled / naive (render + tokenize): {timings['naive'] / timings['compiled']:.1f}x")
    print(f"ratio pipeline / naive (render + tokenize): {timings['naive'] / timings['pipeline']:.1f}x")
    print(f"ratio compiled / naive (render only):       "
          f"{timings['naive render only'] / timings['compiled render only']:.1f}x")


if __name__ == "__main__":
    main()
