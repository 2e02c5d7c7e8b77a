"""`t2t-mtl tokenizer train`: train a SentencePiece T5 tokenizer on a mixture's rendered text."""
from __future__ import annotations

import argparse
import sys

from t2t_mtl.cli.common import (add_data_dir_option, add_task_module_option, add_tasks_dir_option,
                                data_dir_problem, fail, name_argument, path_argument)
from t2t_mtl.output_paths import prepare_output_dir, refuse_non_empty_dir, unwritten_output
from t2t_mtl.registration import register_tasks


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tokenizer` command group."""
    parser = subparsers.add_parser("tokenizer", help="train a tokenizer on the training mixture's text")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a SentencePiece unigram model on a mixture and save a T5 tokenizer",
        description="Train SentencePiece (unigram; pad 0, eos 1, unk 2, no bos) on the rendered inputs, "
                    "targets and answer choices of every task in a mixture, and save a transformers T5 "
                    "tokenizer with 100 sentinels <extra_id_0..99> into --out.")
    train.add_argument("--mixture", required=True, help="registered mixture (or task) name, e.g. procedural")
    train.add_argument("--out", type=path_argument, required=True,
                       help="output folder (created; spiece.model + tokenizer files); a folder that holds files is "
                            "refused unless --overwrite")
    train.add_argument("--overwrite", action="store_true",
                       help="write into a non-empty --out folder, replacing its files of the same names")
    train.add_argument("--vocab-size", type=int, default=8000,
                       help="SentencePiece pieces, an upper bound on small corpora (default 8000; the 100 "
                            "sentinels come on top)")
    train.add_argument("--max-examples", type=int, default=None, help="rows per task (default: all)")
    train.add_argument("--split", type=name_argument, default=None,
                       help="split to read (default: train, else the task's first)")
    add_data_dir_option(train)
    add_tasks_dir_option(train)
    add_task_module_option(train)
    train.add_argument("--seed", type=int, default=0, help="seed of each row's template choice (default 0)")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train and save; print the vocabulary size and the output folder. Returns the exit code."""
    import task_registry
    from t2t_mtl.tokenizer import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE, mixture_texts, train_tokenizer

    problem = data_dir_problem(args.data_dir)
    if problem:
        return fail(problem)
    if args.data_dir:
        task_registry.set_data_dir(args.data_dir)
    if args.max_examples is not None and args.max_examples < 1:
        print(f"error: --max-examples must be at least 1, got {args.max_examples}", file=sys.stderr)
        return 2
    if args.vocab_size < MIN_VOCAB_SIZE:
        print(f"error: --vocab-size must be at least {MIN_VOCAB_SIZE} (pad, eos, unk and one piece), got "
              f"{args.vocab_size}", file=sys.stderr)
        return 2
    if args.vocab_size > MAX_VOCAB_SIZE:
        print(f"error: --vocab-size must be at most {MAX_VOCAB_SIZE} (SentencePiece's limit), got {args.vocab_size}",
              file=sys.stderr)
        return 2
    try:
        prepare_output_dir(args.out, "--out", create=False)  # (created once trained: a refused run leaves none)
        if not args.overwrite:
            refuse_non_empty_dir(args.out, "--out")
        register_tasks(args.tasks_dir, args.task_modules)
        texts = mixture_texts(args.mixture, max_examples=args.max_examples, split=args.split, seed=args.seed,
                              where="--mixture")
        tokenizer = train_tokenizer(texts, args.out, vocab_size=args.vocab_size)
    except (KeyError, ValueError) as error:
        return fail(error, args.tasks_dir)
    except OSError as error:  # an --out that cannot be written (permissions, a read-only disk), found on writing
        print(f"error: {unwritten_output(error, '--out', args.out, 'the tokenizer')}", file=sys.stderr)
        return 2
    print(f"saved a T5 tokenizer with {len(tokenizer)} tokens ({len(tokenizer) - 100} pieces + 100 sentinels) "
          f"to {args.out}")
    return 0
