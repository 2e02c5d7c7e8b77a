"""Writing evaluation reports: JSON, a Markdown table, and a PNG bar chart per task."""
from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from t2t_mtl.evaluation.aggregate import compare, finite, summarize
from t2t_mtl.evaluation.metrics import UnknownMetricError, metric_spec
from t2t_mtl.evaluation.results import EvalReport, TemplateResult
from t2t_mtl.json_values import nonfinite_to_null
from t2t_mtl.wording import counted, repeated_items

PathLike = Union[str, Path]


def score_text(value: Optional[float]) -> str:
    """A 0-100 score to one decimal, `—` for none (as report.md and comparison.md write it)."""
    return f"{value:.1f}" if finite(value) else "—"


def other_scores(result: TemplateResult) -> dict[str, float]:
    """A template's metrics besides its primary one (a task's declared `metrics: [accuracy, f1_macro]`: CB's F1), each
    its own primary output on the 0-100 scale the primary score uses; metrics without a finite value are left out."""
    scores = {}
    for name, outputs in result.metrics.items():
        if name == result.primary_metric:
            continue
        try:
            spec = metric_spec(name)
        except UnknownMetricError:  # (a report of an older release, or a registered metric this process lacks)
            continue
        value = (outputs or {}).get(spec.primary)
        if finite(value):
            scores[name] = value * spec.scale
    return scores


def _others_text(scores: dict[str, float]) -> str:
    return "; ".join(f"{name} {score_text(value)}" for name, value in scores.items()) or "—"


def _task_other_medians(results: Sequence[TemplateResult]) -> dict[str, float]:
    """Per secondary metric of a task's templates, the median over the templates that have it."""
    per_metric: dict[str, list[float]] = {}
    for result in results:
        for name, value in other_scores(result).items():
            per_metric.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in per_metric.items()}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def report_to_dict(report: EvalReport) -> dict[str, Any]:
    """The report plus its aggregates as plain JSON-able data (strict JSON: a non-finite number is None)."""
    summary = summarize(report)
    return nonfinite_to_null({**report.to_dict(),
                       "summary": {**summary, "tasks": {k: v.to_dict() for k, v in summary["tasks"].items()}}})


def to_markdown(report: EvalReport) -> str:
    """Per-task summary table, aggregate line, and the per-template table."""
    summary = summarize(report)
    shots = int((report.settings or {}).get("num_shots") or 0)
    lines = [f"## Evaluation of {report.name}" + (f" ({shots}-shot)" if shots else ""), "",
             "| task | metric | templates | median | mean | min | max | majority | chance | examples "
             "| other metrics (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary["tasks"].values():
        lines.append(f"| {s.task} | {s.primary_metric} | {s.num_scored_templates}/{s.num_templates} | "
                     f"{score_text(s.median)} | {score_text(s.mean)} | {score_text(s.min)} | {score_text(s.max)} | "
                     f"{score_text(s.majority_baseline)} | {score_text(s.chance_baseline)} | {s.num_examples} | "
                     f"{_others_text(_task_other_medians(report.for_task(s.task)))} |")
    lines += ["", f"decaScore (sum of {counted(summary['num_tasks'], 'task median')}): "
                  f"{score_text(summary['decascore'])}; macro average: {score_text(summary['macro_average'])}"
                  + (f" (chance {score_text(summary['chance'])})" if summary["chance"] is not None else "")]
    if summary["unscored_tasks"]:
        lines.append(f"Tasks with no scored template: {', '.join(summary['unscored_tasks'])}")
    routes: dict[str, list[str]] = {}
    for task, route in report.unseen_tasks.items():
        routes.setdefault(route, []).append(task)
    for route, tasks in routes.items():
        lines.append(f"Tasks the model was not trained on, served by the unseen-task route ({route}): "
                     f"{', '.join(tasks)}")
    lines += ["", "| task | template | scoring | score | majority | chance | n | skipped | errors | other metrics |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.results:
        template = r.template.replace("|", "\\|")
        lines.append(f"| {r.task} | {template} | {r.scoring} | {score_text(r.score)} | "
                     f"{score_text(r.majority_baseline)} | {score_text(r.chance_baseline)} | {r.num_examples} | "
                     f"{r.num_skipped} | {r.num_errors} | "
                     f"{_others_text(other_scores(r))} |")
    lines += _template_choice_lines(report.settings or {})
    skipping = [r for r in report.results if r.num_skipped]
    if skipping:
        lines += ["", "Rows a template skipped, rendering no target or no input for them (promptsource writes some "
                      "templates for some rows alone, as COPA's for its cause or its effect questions), so its score "
                      "covers the other rows:"]
        lines += [f"- {r.task} / {r.template}: {r.num_skipped} of {r.num_skipped + r.num_examples + r.num_errors} "
                  f"rows" for r in skipping]
    errors = [r for r in report.results if r.error]
    if errors:
        lines += ["", "Render errors (first per template):"]
        lines += [f"- {r.task} / {r.template}: {r.error}" for r in errors]
    truncated = [r for r in report.results if r.num_truncated]
    if truncated:
        limit = (report.settings or {}).get("max_input_length")
        kept = ("their beginning only" if all(r.truncation_side == "right" for r in truncated)
                else "the part that fits only, their beginning or, where marked, their end")
        lines += ["", f"Inputs truncated to the input limit{f' ({limit} tokens)' if limit else ''}, scored on {kept} "
                      f"(raise it to score them whole: `t2t-mtl eval --max-input-length N`, "
                      f"`evaluation.max_input_length` in a config):"]
        lines += [f"- {r.task} / {r.template}: {r.num_truncated} of {r.num_examples}"
                  + (" (their end)" if r.truncation_side == "left" else "") for r in truncated]
    long_answers = [r for r in report.results if r.num_long_answers]
    if long_answers:
        limit = (report.settings or {}).get("max_new_tokens")
        lines += ["", f"Examples with no gold answer that fits the generation limit"
                      f"{f' ({limit} tokens)' if limit else ''}, so none can be written whole (raise it: "
                      f"`t2t-mtl eval --max-new-tokens N`, `evaluation.max_new_tokens` in a config):"]
        lines += [f"- {r.task} / {r.template}: {r.num_long_answers} of {r.num_examples}" for r in long_answers]
    dropping = [r for r in report.results if r.num_moe_dropped]
    if dropping:
        lines += ["", "MoE (token, slot) choices dropped over expert capacity while scoring, which got no expert "
                      "output (raise model.moe.eval_capacity_factor, or set model.moe.dropless):"]
        lines += [f"- {r.task} / {r.template}: {r.num_moe_dropped} of {r.num_moe_choices} "
                  f"({100 * r.num_moe_dropped / r.num_moe_choices:.1f}%)" for r in dropping]
    fewer_shots = [r for r in report.results if r.num_fewer_shots]
    if fewer_shots:
        lines += ["", f"Inputs given fewer than {counted(shots, 'demonstration')} (too few rows, or they do not fit "
                      f"the input limit):"]
        lines += [f"- {r.task} / {r.template}: {r.num_fewer_shots} of {r.num_examples}" + _dropped_text(r)
                  for r in fewer_shots]
    incomplete = [r for r in report.results if r.incomplete_groups]
    if incomplete:
        lines += ["", "Groups left out of group metrics (some of their rows not scored):"]
        lines += [f"- {r.task} / {r.template}: {r.incomplete_groups}" for r in incomplete]
    not_computed = [(r, f"{m}: no shipped metric module") for r in report.results for m in r.unsupported_metrics]
    not_computed += [(r, f"{m}: {why}") for r in report.results for m, why in r.skipped_metrics.items()]
    if not_computed:
        lines += ["", "Metrics not computed (template metadata):"]
        lines += [f"- {r.task} / {r.template}: {what}" for r, what in not_computed]
    return "\n".join(lines) + "\n"


def _template_choice_lines(settings: dict[str, Any]) -> list[str]:
    """What chose the templates scored, where not every template of each task was (the report's template counts are
    of those chosen)."""
    lines = []
    chosen = settings.get("templates") or {}
    if chosen:
        lines += ["", "Templates chosen by name (`--template`), the others not scored:"]
        lines += [f"- {task}: {', '.join(names)}" for task, names in chosen.items()]
    if settings.get("original_task_only"):
        lines += ["", "Templates whose promptsource metadata marks original_task alone (`--original-task`, "
                      "`evaluation.original_task_only`), as T0's evaluation scored; the others not scored."]
    return lines


def _dropped_text(result: TemplateResult) -> str:
    """What the input limit cost a template's k-shot prompts, and the limit that gives each all of its own."""
    if not result.num_dropped_shots:
        return ""
    limit = result.shots_fit_length
    return (f"; {counted(result.num_dropped_shots, 'demonstration')} dropped to fit the input limit, all fit at "
            f"{limit} tokens (`t2t-mtl eval --max-input-length {limit}`, `evaluation.max_input_length` in a config)")


def distinct_columns(reports: Sequence[EvalReport], paths: Sequence[PathLike], taken: Sequence[str] = ()
                     ) -> list[EvalReport]:
    """`reports` (read from `paths`), each one whose model name repeats another's or one of `taken` (other columns'
    names) renamed `NAME (PATH)`, so the comparison's columns are distinct. Raises ValueError naming the columns
    that still repeat, or a path naming the report.json an earlier one names (a folder and its file)."""
    names = [r.name for r in reports] + list(taken)
    labelled = [dataclasses.replace(r, name=f"{r.name} ({path})") if names.count(r.name) > 1 else r
                for r, path in zip(reports, paths)]
    repeated = repeated_items([r.name for r in labelled] + list(taken))
    if repeated:
        raise ValueError(f"{repeated} would name more than one column")
    files = [report_file(path).resolve() for path in paths]  # (a folder and its report.json: one report)
    for at, file in enumerate(files):
        if file in files[:at]:
            raise ValueError(f"{str(paths[at])!r} is the report that {str(paths[files.index(file)])!r} names")
    return labelled


def comparison_markdown(reports: Sequence[EvalReport]) -> str:
    """One row per task, one column per model (task medians), then decaScore and macro average rows; where the
    reports score different tasks, those two rows again over the tasks every report scores, and a note saying so;
    a note naming each setting that changes scores and differs between the reports."""
    table = compare(reports)
    names = table["models"]
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task, row in table["tasks"].items():
        lines.append(f"| {task} | " + " | ".join(score_text(row[n]) for n in names) + " |")
    lines.append("| **decaScore** | " + " | ".join(score_text(table["decascore"][n]) for n in names) + " |")
    lines.append("| **macro average** | " + " | ".join(score_text(table["macro_average"][n]) for n in names) + " |")
    common = table["common_tasks"]
    notes = []
    if len(common) < len(table["tasks"]):
        if common:
            shared = f"the {counted(len(common), 'task')} every report scores"
            for key, label in (("common_decascore", "decaScore"), ("common_macro_average", "macro average")):
                lines.append(f"| **{label}, {shared}** | " + " | ".join(score_text(table[key][n]) for n in names)
                             + " |")
            notes.append(f"The reports score different tasks: each one's decaScore and macro average cover its own; "
                         f"compare those over {shared} ({', '.join(common)}).")
        else:
            notes.append("The reports score different tasks, no task in all of them: their decaScores and macro "
                         "averages cover different tasks and do not compare.")
    for key, values in table["differing_settings"].items():
        notes.append(f"Scored with different `{key}`: " + ", ".join(f"{_setting(v)} ({n})" for n, v in values.items())
                     + "; " + _difference(key, reports))
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes)


def _difference(key: str, reports: Sequence[EvalReport]) -> str:
    """What a differing setting `key` does to the scores: the evaluation seed (a run's `training.seed`, so two
    training seeds' reports always differ in it) changes nothing of BIG-bench tasks, whose one template and k-shot
    demonstrations draw with BIG-bench's own seed, and zero-shot, only the templates that draw at random; the batch
    size, compared only where an MoE model dropped choices over expert capacity, which ones it drops."""
    if key == "batch_size":
        dropped = ", ".join(f"{sum(r.num_moe_dropped for r in report.results)} of "
                            f"{sum(r.num_moe_choices for r in report.results)} ({report.name})" for report in reports
                            if any(r.num_moe_dropped for r in report.results))
        return (f"the MoE layers dropped (token, slot) choices over expert capacity while scoring ({dropped}), which "
                f"ones depending on the examples a batch holds: their scores are not like for like.")
    if key == "seed" and _bigbench_only(reports):
        return ("every task scored is a BIG-bench task, whose prompts and k-shot demonstrations are drawn with "
                "BIG-bench's own seed: it changes nothing.")
    if key == "seed" and not any(r.settings.get("num_shots") for r in reports):
        return ("zero-shot, it changes only what templates drawing at random (Jinja's `choice` and `random` filters) "
                "render.")
    return "their scores are not like for like."


def _bigbench_only(reports: Sequence[EvalReport]) -> bool:
    """Whether every result of `reports` (at least one) is of an imported BIG-bench task (its one template)."""
    from task_registry.bigbench import TEMPLATE_NAME  # (task_registry is slow to import: where a seed differs only)

    results = [result for report in reports for result in report.results]
    return bool(results) and all(result.template == TEMPLATE_NAME for result in results)


def _setting(value: Any) -> str:
    """An evaluation setting as the comparison's note prints it (null: the default)."""
    return "default" if value is None else json.dumps(value, ensure_ascii=False)


def plot_task(report: EvalReport, task: str, path: PathLike) -> Path:
    """A bar per template (score), with the task median and the majority baseline as horizontal lines."""
    from t2t_mtl.figures import figure_and_axes

    results = report.for_task(task)
    if not results:
        raise ValueError(f"report {report.name!r} has no results for task {task!r}")
    summary = summarize(report)["tasks"][task]
    names = [r.template for r in results]
    scores = [r.score if finite(r.score) else 0.0 for r in results]
    fig, ax = figure_and_axes((max(4.0, 0.6 * len(names) + 2), 4.0))
    ax.bar(range(len(names)), scores, color="tab:blue")
    if summary.median is not None:
        ax.axhline(summary.median, color="tab:green", linestyle="-", label=f"median {summary.median:.1f}")
    if summary.majority_baseline is not None:
        ax.axhline(summary.majority_baseline, color="tab:red", linestyle="--",
                   label=f"majority {summary.majority_baseline:.1f}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(min(0.0, *scores), max(100.0, *scores))
    ax.set_title(f"{task}: {summary.primary_metric}\n{report.name}", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_report(report: EvalReport, out_dir: PathLike, *, plots: bool = True) -> dict[str, Any]:
    """Write `report.json`, `report.md` and `plots/<task>.png` under out_dir; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(report_to_dict(report), indent=2, ensure_ascii=False, allow_nan=False),
                         encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(to_markdown(report), encoding="utf-8")
    pngs = ([plot_task(report, task, out / "plots" / f"{_safe_name(task)}.png") for task in report.tasks()]
            if plots else [])
    return {"json": json_path, "markdown": md_path, "plots": pngs}


def _report_hint(given: Path) -> str:
    """What to pass instead of `given`, which holds no report: a run's `eval/` (its report after training), else
    the close existing path a misspelt one meant, with how reports are written."""
    if (given / "eval" / "report.json").is_file():
        return f"; it is a run's folder, whose report after training is in eval/: pass {given / 'eval'}"
    from task_registry.path_hints import path_hint  # (task_registry is slow to import: on the error path only)

    return f"{path_hint(given) if not given.exists() else ''}; write one with `t2t-mtl eval --out DIR`"


def report_file(path: PathLike) -> Path:
    """The report.json that `path` names: the file itself, or the one in the folder `path`."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def read_report(path: PathLike) -> EvalReport:
    """Load an `EvalReport` from a report.json (or the folder that holds it)."""
    given, path = Path(path), report_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation report at {str(path)!r}{_report_hint(given)}")
    try:
        return EvalReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # not JSON, or JSON of something else
        raise ValueError(f"{str(path)!r} is not an evaluation report.json written by `t2t-mtl eval --out DIR` "
                         f"({type(error).__name__}: {error})") from None
