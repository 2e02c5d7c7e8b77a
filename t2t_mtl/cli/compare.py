"""`t2t-mtl compare REPORT REPORT [...] [--out FILE]`: earlier evaluation reports side by side, no model loaded."""
from __future__ import annotations

import argparse
import sys

from t2t_mtl.cli.common import path_argument
from t2t_mtl.cli.progress_bars import READS_NO_DATASETS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="put evaluation reports side by side (task medians, decaScore, macro average)",
        description="Reads report.json files (or the folders holding them: `t2t-mtl eval --out DIR`, a run's RUN/eval) "
                    "and prints one Markdown table, a row per task and a column per report, as `eval --compare` "
                    "writes comparison.md; a report whose model name repeats another's is labelled by its path. "
                    "Where the reports score different tasks, it adds their aggregates over the tasks all score; a "
                    "note names each setting that changes scores and differs between them.")
    parser.add_argument("reports", type=path_argument, nargs="+", metavar="REPORT",
                        help="report.json files or their folders, two or more")
    parser.add_argument("--out", type=path_argument, default=None, metavar="FILE",
                        help="also write the table to FILE (e.g. comparison.md)")
    parser.set_defaults(func=run, **{READS_NO_DATASETS: True})


def run(args: argparse.Namespace) -> int:
    """Print (and with --out write) the comparison table; 2 with one line on stderr for a bad report or --out."""
    from t2t_mtl.evaluation.report import comparison_markdown, distinct_columns, read_report
    from t2t_mtl.output_paths import prepare_output_file, unwritten_output

    if len(args.reports) < 2:
        print(f"error: compare takes two or more reports, got one ({args.reports[0]}); `t2t-mtl eval` prints a "
              f"single report", file=sys.stderr)
        return 2
    try:
        if args.out:
            prepare_output_file(args.out, "--out", "comparison.md")
        reports = [read_report(path) for path in args.reports]
    except (FileNotFoundError, ValueError) as error:  # read_report's and OutputPathError name the path
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        reports = distinct_columns(reports, args.reports)
    except ValueError as error:
        print(f"error: {error}; give each report once", file=sys.stderr)
        return 2
    table = comparison_markdown(reports)
    print(table, end="")
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as out:
                out.write(table)
        except OSError as error:
            print(f"error: {unwritten_output(error, '--out', args.out, 'the table')}; it is printed above",
                  file=sys.stderr)
            return 2
    return 0
