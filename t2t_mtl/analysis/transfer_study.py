"""Running a pairwise transfer study (`t2t_mtl.analysis.transfer` has the settings, the rule and the analysis).

Each run's result is a JSON file in `<study>/runs/`, written atomically; a rerun reuses every result it
finds, so a study resumes after an interruption and can be spread over processes (`workers`) and over
independent invocations (`shard=(i, n)` runs every n-th run starting at i; any invocation finishes the
study once all results exist). `study.json` identifies the study (tasks, seeds, steps, the base config, the run
options that change scores, the definitions of its registered tasks); another study in the same folder is refused.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from t2t_mtl.analysis.errors import RunResultError, StudyConfigError, StudyMismatchError
from t2t_mtl.analysis.transfer import (DEFAULT_K, RunSpec, TransferAnalysis, analyse, first_phase_settings,
                                       oracle_phase_settings)
from t2t_mtl.wording import counted, repeated_items

#: run options that do not change a run's scores, so they may differ between invocations of one study
NON_SCORING_OPTIONS = ("keep_checkpoints",)

#: run_setting(train_tasks, test_tasks, seed, steps, base_cfg, work_dir=..., **run_options) -> {task: score}
RunFunction = Callable[..., Mapping[str, float]]
#: prepare(base_cfg, tasks, study_dir) -> extra run options shared by every run (not part of the study's identity)
PrepareFunction = Callable[[Optional[Mapping[str, Any]], Sequence[str], Path], Mapping[str, Any]]


# ------------------------------------------------------------------------------------------ the study
@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What identifies a study: a study directory holds exactly one."""

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    config_fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what a study directory records)."""
        return {"tasks": list(self.tasks), "seeds": list(self.seeds), "steps": self.steps,
                "config_fingerprint": self.config_fingerprint}


def config_fingerprint(base_cfg: Optional[Mapping[str, Any]]) -> str:
    """Stable hash of the base config (JSON with sorted keys), so a study never mixes configs."""
    text = json.dumps(base_cfg or {}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def task_definitions(tasks: Sequence[str]) -> dict[str, str]:
    """`Task.definition_digest()` of each of `tasks` the task registry holds (a name it does not hold, e.g. one a
    custom run function knows, is left out)."""
    import task_registry

    registered = set(task_registry.list_tasks())
    return {name: task_registry.get_task(name).definition_digest() for name in tasks if name in registered}


def _atomic_write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b), key=str)
                for k in _differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".") or "(root)"]


def _parse_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise StudyConfigError(f"shard {index}/{count} is invalid: use i/n with 0 <= i < n, e.g. --shard 0/2")
    return index, count


@dataclasses.dataclass
class StudyOutcome:
    """Result of one invocation: the analysis when the study is complete, else what is still missing."""

    analysis: Optional[TransferAnalysis]
    outputs: dict[str, Path]
    missing: list[RunSpec]
    ran: list[RunSpec]

    @property
    def complete(self) -> bool:
        """Whether every run is in and `analysis` is set."""
        return self.analysis is not None


def _execute_run(run_fn: RunFunction, spec: RunSpec, steps: int, base_cfg: Optional[Mapping[str, Any]],
                 run_options: Mapping[str, Any], runs_dir: str, threads: int) -> dict[str, Any]:
    """Train and score one run, then store its result; module-level so a process pool can pickle it."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    runs = Path(runs_dir)
    work_dir = runs / spec.key
    start = time.time()
    scores = dict(run_fn(list(spec.train_tasks), list(spec.train_tasks), spec.seed, steps, base_cfg,
                         work_dir=work_dir, **run_options))
    missing = [t for t in spec.train_tasks if t not in scores]
    if missing:
        raise RunResultError(f"run {spec.key}: the run function returned no score for {missing}")
    bad = {t: v for t, v in scores.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise RunResultError(f"run {spec.key}: non-finite or non-numeric scores {bad}")
    result = {"train_tasks": list(spec.train_tasks), "seed": spec.seed, "steps": steps,
              "scores": {t: float(v) for t, v in scores.items()}, "wall_s": round(time.time() - start, 3)}
    _atomic_write_json(runs / f"{spec.key}.json", result)
    return result


class TransferStudy:
    """A resumable pairwise transfer study stored in `out_dir`.

    `run_fn(train_tasks, test_tasks, seed, steps, base_cfg, work_dir=Path, **run_options) -> {task: score}`
    trains and scores one run (default: `run_setting`, the engine + evaluation); it must be a module-level
    function when `workers > 1`. `base_cfg` and `run_options` identify the study with tasks/seeds/steps and the
    definitions of its registered tasks (`task_definitions`); `k` does not (it only changes the analysis).
    `prepare_fn(base_cfg, tasks, out_dir) -> dict` runs once per invocation before any run and adds shared run
    options (for `run_setting`: the study tokenizer).
    """

    def __init__(self, tasks: Sequence[str], seeds: int | Sequence[int], steps: int, out_dir: str | Path, *,
                 k: float = DEFAULT_K, base_cfg: Optional[Mapping[str, Any]] = None,
                 run_fn: Optional[RunFunction] = None, run_options: Optional[Mapping[str, Any]] = None,
                 prepare_fn: Optional[PrepareFunction] = None) -> None:
        tasks = list(tasks)
        if len(tasks) < 2:
            raise StudyConfigError(f"a transfer study needs at least 2 tasks, got {tasks}")
        dupes = repeated_items(tasks)
        if dupes:
            raise StudyConfigError(f"task(s) {dupes} listed more than once in --tasks")
        seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        if not seed_list or len(set(seed_list)) != len(seed_list):
            raise StudyConfigError(f"seeds must be at least one distinct seed, got {seeds!r}")
        if steps < 1:
            raise StudyConfigError(f"steps must be >= 1, got {steps}")
        if not k >= 0:
            raise StudyConfigError(f"k must be >= 0, got {k}")
        self.tasks = tasks
        self.seeds = seed_list
        self.steps = int(steps)
        self.k = float(k)
        self.base_cfg = dict(base_cfg) if base_cfg else None
        self.out_dir = Path(out_dir)
        self.runs_dir = self.out_dir / "runs"
        self.run_fn = run_fn if run_fn is not None else run_setting
        self.prepare_fn = prepare_fn if prepare_fn is not None or run_fn is not None else prepare_run_setting
        self.run_options = dict(run_options or {})
        self._shared_options: Optional[dict[str, Any]] = None
        self.spec = StudySpec(tuple(tasks), tuple(seed_list), self.steps,
                              config_fingerprint(self._identifying_settings()))

    # -- storage
    def _identifying_settings(self) -> dict[str, Any]:
        """Base config and the run options that change scores (not e.g. `keep_checkpoints`)."""
        options = {k: v for k, v in self.run_options.items() if k not in NON_SCORING_OPTIONS}
        return {"config": self.base_cfg, "run_options": options}

    def _check_or_write_spec(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # permissions, a read-only disk: found before anything is trained
            raise StudyConfigError(f"--out {self.out_dir}: the study could not be written ({exc})") from None
        path = self.out_dir / "study.json"
        settings = self._identifying_settings()
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise StudyMismatchError(f"{path} is not valid JSON ({exc}): delete it or pick another --out")
            diff = {key: (stored.get(key), value) for key, value in self.spec.to_dict().items()
                    if stored.get(key) != value}
            if diff:
                if "config_fingerprint" in diff:
                    requested = json.loads(json.dumps(settings, default=str))
                    keys = _differing_keys(stored.get("settings") or {}, requested)
                    diff["config_fingerprint"] = f"differs at {keys or 'unknown keys'}"
                raise StudyMismatchError(
                    f"{self.out_dir} holds another study (stored vs requested: {diff}); use another --out "
                    f"or the same tasks/seeds/steps/config to resume it")
            self._check_task_definitions(path, stored)
        else:
            _atomic_write_json(path, {**self.spec.to_dict(), "settings": settings,
                                      "task_definitions": task_definitions(self.tasks)})

    def _check_task_definitions(self, path: Path, stored: dict[str, Any]) -> None:
        """StudyMismatchError naming each task whose definition differs from the one `study.json` recorded; a task
        it holds no record of (not registered then, or a study from before records were kept) is recorded now."""
        recorded = stored.get("task_definitions") or {}
        definitions = task_definitions(self.tasks)
        changed = [name for name, digest in definitions.items() if recorded.get(name, digest) != digest]
        if changed:
            raise StudyMismatchError(
                f"{self.out_dir}: the definition of task(s) {changed} (templates, data source or the code of its "
                f"generator, preprocessors or metrics) changed since this study stored its runs, whose results would "
                f"be stale; use another --out, or revert the definition to resume this study")
        if set(definitions) - set(recorded):
            _atomic_write_json(path, {**stored, "task_definitions": {**recorded, **definitions}})

    def load_scores(self) -> dict[RunSpec, dict[str, float]]:
        """Every stored run result of this study, keyed by run."""
        scores: dict[RunSpec, dict[str, float]] = {}
        if not self.runs_dir.is_dir():
            return scores
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                spec = RunSpec.of(data["train_tasks"], data["seed"])
                run_scores = {str(t): float(v) for t, v in data["scores"].items()}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise RunResultError(f"run result {path} is unreadable ({exc!r}): delete it to rerun that run")
            if data.get("steps") != self.steps:
                raise RunResultError(f"run result {path} was trained for {data.get('steps')} steps, the study "
                                     f"uses {self.steps}: delete it or use another --out")
            if spec.key != path.stem:
                raise RunResultError(f"run result {path} describes run {spec.key}: rename or delete it")
            scores[spec] = run_scores
        return scores

    # -- planning
    def runs_for(self, settings: Sequence[frozenset[str]]) -> list[RunSpec]:
        """One run per setting and seed, settings first."""
        return [RunSpec.of(s, seed) for s in settings for seed in self.seeds]

    def first_phase_runs(self) -> list[RunSpec]:
        """The runs of `first_phase_settings`: STL, pairs, All, All-but-one."""
        return self.runs_for(first_phase_settings(self.tasks))

    def oracle_runs(self, oracle: Mapping[str, Sequence[str]]) -> list[RunSpec]:
        """The runs of the Oracle sets (`oracle`: task → its benefiting tasks) the first phase has not trained."""
        return self.runs_for(oracle_phase_settings(self.tasks, oracle))

    # -- execution
    def _execute(self, specs: Sequence[RunSpec], workers: int, log: Callable[[str], None]) -> list[RunSpec]:
        if not specs:
            return []
        if self._shared_options is None:
            self._shared_options = dict(self.prepare_fn(self.base_cfg, self.tasks, self.out_dir)
                                        if self.prepare_fn else {})
        options = {**self.run_options, **self._shared_options}
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
        if workers <= 1:
            for i, spec in enumerate(specs, 1):
                log(f"[{i}/{len(specs)}] training {list(spec.train_tasks)} seed {spec.seed}")
                try:
                    _execute_run(self.run_fn, spec, self.steps, self.base_cfg, options, str(self.runs_dir), threads)
                except BaseException:
                    log(f"run {spec.key} failed; finished runs are kept, rerun the same command to resume")
                    raise
            return list(specs)
        ctx = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        futures = {pool.submit(_execute_run, self.run_fn, spec, self.steps, self.base_cfg, options,
                               str(self.runs_dir), threads): spec for spec in specs}
        try:
            for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
                spec = futures[future]
                try:
                    future.result()
                except BaseException:
                    log(f"run {spec.key} failed; finished runs are kept, rerun the same command to resume")
                    raise
                log(f"[{i}/{len(specs)}] done {list(spec.train_tasks)} seed {spec.seed}")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return list(specs)

    def _run_phase(self, specs: Sequence[RunSpec], announce: Callable[[int, int], str], shard: tuple[int, int],
                   workers: int, log: Callable[[str], None]) -> tuple[list[RunSpec], list[RunSpec]]:
        """Execute this shard's share of the `specs` that have no stored result, after logging
        `announce(missing, mine)` (their counts); returns (the runs executed, the `specs` still missing)."""
        index, count = shard
        have = self.load_scores()
        missing = [s for s in specs if s not in have]
        mine = [s for i, s in enumerate(specs) if i % count == index and s in missing]
        log(announce(len(missing), len(mine)))
        ran = self._execute(mine, workers, log)
        have = self.load_scores()
        return ran, [s for s in specs if s not in have]

    def run(self, *, workers: int = 1, shard: tuple[int, int] = (0, 1),
            log: Callable[[str], None] = print) -> StudyOutcome:
        """Run this invocation's share of the missing runs; analyse and write outputs once all exist."""
        index, count = _parse_shard(shard)
        if workers < 1:
            raise StudyConfigError(f"workers must be >= 1, got {workers}")
        self._check_or_write_spec()

        phase1 = self.first_phase_runs()
        ran, missing = self._run_phase(
            phase1, lambda n_missing, n_mine: (
                f"transfer study {self.out_dir}: {counted(len(phase1), 'first-phase run')}, {n_missing} missing, "
                f"{n_mine} for this process (shard {index}/{count})"), (index, count), workers, log)
        if missing:
            return StudyOutcome(None, {}, missing, ran)

        partial = analyse(self.tasks, self.seeds, self.load_scores(), self.k, with_oracle=False)
        oracle_specs = self.oracle_runs(partial.oracle)
        ran_oracle, missing = self._run_phase(
            oracle_specs, lambda n_missing, n_mine: (
                f"Oracle sets: {partial.oracle}; {counted(len(oracle_specs), 'Oracle run')}, {n_missing} missing, "
                f"{n_mine} for this process"), (index, count), workers, log)
        ran += ran_oracle
        if missing:
            return StudyOutcome(None, {}, missing, ran)

        from t2t_mtl.analysis.transfer_report import write_outputs

        analysis = analyse(self.tasks, self.seeds, self.load_scores(), self.k, with_oracle=True)
        outputs = write_outputs(analysis, self.out_dir, spec=self.spec.to_dict())
        return StudyOutcome(analysis, outputs, [], ran)


# ------------------------------------------------------------------------------- one run via the engine
def run_setting(train_tasks: Sequence[str], test_tasks: Sequence[str], seed: int, steps: int,
                base_cfg: Optional[Mapping[str, Any]] = None, *, work_dir: str | Path,
                **options: Any) -> dict[str, float]:
    """Train on `train_tasks` for `steps` steps with `seed`, then score each of `test_tasks`.

    Uses the training engine and the evaluation runner; a task's score is the mean over its templates of
    its primary metric (0–100, higher is better) on validation examples. `options`: `eval_examples`,
    `tokenizer_path`, `cache_dir`, `keep_checkpoints` (see `t2t_mtl.analysis.engine_run.train_and_score`).
    """
    from t2t_mtl.analysis.engine_run import train_and_score

    return train_and_score(list(train_tasks), list(test_tasks), int(seed), int(steps), base_cfg, Path(work_dir),
                           **options)


def prepare_run_setting(base_cfg: Optional[Mapping[str, Any]], tasks: Sequence[str], study_dir: Path
                        ) -> dict[str, Any]:
    """Shared run options of `run_setting`: the tokenizer trained once for the whole study."""
    from t2t_mtl.analysis.engine_run import prepare_study

    return prepare_study(base_cfg, tasks, Path(study_dir))
