"""Pairwise transfer study (Changpinyo et al. 2018): which tasks help which when trained together.

Settings, each trained over several seeds and scored on every task it trains:
- STL: each task alone;            - pair {s, t}: every unordered pair;
- All: every task together;        - All-but-one: every task but s (one per s);
- Oracle: t with every task that benefits it (decided from the pairs, trained afterwards).
One run trains a set of tasks with one seed and is scored on each of its tasks, so a pair run serves
both of its tasks and a setting already trained (e.g. an Oracle set equal to a pair) is never retrained.

Rule (k = 1.5 by default): s *benefits* t when µ({s,t},t) − kσ({s,t},t) > µ({t},t) + kσ({t},t);
s *harms* t when µ({s,t},t) + kσ({s,t},t) < µ({t},t) − kσ({t},t). µ and σ are the mean and the sample
standard deviation (ddof=1; 0 for a single seed) of the score over seeds. Scores are higher-is-better.

This module holds the rule, the settings and the analysis of a study's scores; `transfer_study` runs a study.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from t2t_mtl.analysis.errors import RunResultError

DEFAULT_K = 1.5


# ----------------------------------------------------------------------------------------------- rule
@dataclasses.dataclass(frozen=True)
class ScoreStat:
    """Mean and sample standard deviation of one (setting, test task) score over seeds."""

    mean: float
    std: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> "ScoreStat":
        """The stat of `values` (σ with ddof=1, 0 for one value); raises `ValueError` for no value."""
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("ScoreStat.of needs at least one score")
        mean = sum(vals) / len(vals)
        if len(vals) == 1:
            return cls(mean, 0.0, vals)
        var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
        return cls(mean, math.sqrt(var), vals)

    def to_dict(self) -> dict[str, Any]:
        """`{"mean", "std", "n", "values"}`."""
        return {"mean": self.mean, "std": self.std, "n": len(self.values), "values": list(self.values)}


def benefits(multi: ScoreStat, single: ScoreStat, k: float = DEFAULT_K) -> bool:
    """True when µ_multi − kσ_multi > µ_single + kσ_single (the multitask setting clearly helps)."""
    return multi.mean - k * multi.std > single.mean + k * single.std


def harms(multi: ScoreStat, single: ScoreStat, k: float = DEFAULT_K) -> bool:
    """True when µ_multi + kσ_multi < µ_single − kσ_single (the multitask setting clearly hurts)."""
    return multi.mean + k * multi.std < single.mean - k * single.std


def effect(multi: ScoreStat, single: ScoreStat, k: float = DEFAULT_K) -> str:
    """'benefit', 'harm' or 'none' for a multitask setting against STL."""
    if benefits(multi, single, k):
        return "benefit"
    if harms(multi, single, k):
        return "harm"
    return "none"


# ------------------------------------------------------------------------------------------ settings
def stl_setting(task: str) -> frozenset[str]:
    """STL: `task` alone."""
    return frozenset([task])


def pair_setting(source: str, target: str) -> frozenset[str]:
    """The unordered pair {`source`, `target`}."""
    return frozenset([source, target])


def all_but_setting(tasks: Sequence[str], left_out: str) -> frozenset[str]:
    """Every task of `tasks` but `left_out`."""
    return frozenset(t for t in tasks if t != left_out)


def oracle_sets(relations: Mapping[str, Mapping[str, str]], tasks: Sequence[str]) -> dict[str, list[str]]:
    """Oracle set of each task t: every s ≠ t with relations[t][s] == 'benefit' (task order kept)."""
    return {t: [s for s in tasks if s != t and relations.get(t, {}).get(s) == "benefit"] for t in tasks}


def oracle_setting(task: str, oracle: Sequence[str]) -> frozenset[str]:
    """`task` with its Oracle set (`oracle_sets`)."""
    return frozenset([task, *oracle])


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a set of tasks trained together with one seed, scored on each of them."""

    train_tasks: tuple[str, ...]
    seed: int

    @classmethod
    def of(cls, tasks: Iterable[str], seed: int) -> "RunSpec":
        """The run of the set of `tasks` (duplicates dropped, sorted) with `seed`."""
        return cls(tuple(sorted(set(tasks))), int(seed))

    @property
    def key(self) -> str:
        """File-name-safe, unique name: readable task names, a hash of the exact set, and the seed."""
        readable = "+".join(re.sub(r"[^A-Za-z0-9._-]", "_", t) for t in self.train_tasks)[:80]
        digest = hashlib.sha1("\n".join(self.train_tasks).encode()).hexdigest()[:8]
        return f"{readable}-{digest}-seed{self.seed}"


# ------------------------------------------------------------------------------------------- analysis
@dataclasses.dataclass
class TransferAnalysis:
    """Everything the study reports, computed from run scores alone (no training)."""

    tasks: list[str]
    seeds: list[int]
    k: float
    stl: dict[str, ScoreStat]
    pairs: dict[str, dict[str, ScoreStat]]  # pairs[t][s]: µ/σ of t trained with s
    all_tasks: dict[str, ScoreStat]
    all_but: dict[str, dict[str, ScoreStat]]  # all_but[t][s]: t trained with all but s
    relations: dict[str, dict[str, str]]  # relations[t][s] in {'benefit', 'harm', 'none'}
    oracle: dict[str, list[str]]
    oracle_scores: dict[str, ScoreStat]  # empty until the Oracle runs exist

    def setting_effect(self, stat: ScoreStat, task: str) -> str:
        """'benefit', 'harm' or 'none' for a setting's `stat` on `task` against the task's STL score."""
        return effect(stat, self.stl[task], self.k)

    def to_dict(self) -> dict[str, Any]:
        """The analysis as plain data (stats as `ScoreStat.to_dict`), with the rule it applied."""
        def nested(d: Mapping[str, Mapping[str, ScoreStat]]) -> dict:
            return {t: {s: v.to_dict() for s, v in inner.items()} for t, inner in d.items()}

        return {
            "tasks": self.tasks,
            "seeds": self.seeds,
            "k": self.k,
            "rule": "s benefits t iff mean(s+t on t) - k*std(s+t on t) > mean(t on t) + k*std(t on t); "
            "harms iff mean(s+t on t) + k*std(s+t on t) < mean(t on t) - k*std(t on t); std has ddof=1",
            "stl": {t: v.to_dict() for t, v in self.stl.items()},
            "pairs": nested(self.pairs),
            "all": {t: v.to_dict() for t, v in self.all_tasks.items()},
            "all_but_one": nested(self.all_but),
            "oracle": {t: {"set": self.oracle[t], **(self.oracle_scores[t].to_dict() if t in self.oracle_scores
                                                    else {})} for t in self.tasks},
            "relations": self.relations,
            "benefits": [[s, t] for t in self.tasks for s in self.tasks if self.relations[t].get(s) == "benefit"],
            "harms": [[s, t] for t in self.tasks for s in self.tasks if self.relations[t].get(s) == "harm"],
            "effects_vs_stl": {
                "all": {t: self.setting_effect(v, t) for t, v in self.all_tasks.items()},
                "all_but_one": {t: {s: self.setting_effect(v, t) for s, v in inner.items()}
                                for t, inner in self.all_but.items()},
                "oracle": {t: self.setting_effect(v, t) for t, v in self.oracle_scores.items()},
            },
        }


def _stat(scores: Mapping[RunSpec, Mapping[str, float]], setting: frozenset[str], task: str,
          seeds: Sequence[int]) -> ScoreStat:
    values = []
    for seed in seeds:
        spec = RunSpec.of(setting, seed)
        if spec not in scores:
            raise RunResultError(f"no result for run {spec.key} (tasks {list(spec.train_tasks)}, seed {seed})")
        run_scores = scores[spec]
        if task not in run_scores:
            raise RunResultError(f"run {spec.key} has no score for task {task!r}; it scored "
                                 f"{sorted(run_scores)}: delete its result file to rerun it")
        values.append(run_scores[task])
    return ScoreStat.of(values)


def analyse(tasks: Sequence[str], seeds: Sequence[int], scores: Mapping[RunSpec, Mapping[str, float]],
            k: float = DEFAULT_K, with_oracle: bool = True) -> TransferAnalysis:
    """Summarise run scores into µ ± σ per setting and test task, the relations and the Oracle sets.

    `scores` maps each RunSpec to its per-task scores; it must hold every seed's run of every first-phase setting
    and, with `with_oracle`, of every Oracle set (RunResultError names the first run missing). Without
    `with_oracle`, `oracle_scores` is empty.
    """
    tasks = list(tasks)
    stl = {t: _stat(scores, stl_setting(t), t, seeds) for t in tasks}
    pairs = {t: {s: _stat(scores, pair_setting(s, t), t, seeds) for s in tasks if s != t} for t in tasks}
    all_tasks = {t: _stat(scores, frozenset(tasks), t, seeds) for t in tasks}
    all_but = ({t: {s: _stat(scores, all_but_setting(tasks, s), t, seeds) for s in tasks if s != t}
                for t in tasks} if len(tasks) > 2 else {t: {} for t in tasks})
    relations = {t: {s: effect(pairs[t][s], stl[t], k) for s in pairs[t]} for t in tasks}
    oracle = oracle_sets(relations, tasks)
    oracle_scores: dict[str, ScoreStat] = {}
    if with_oracle:
        oracle_scores = {t: _stat(scores, oracle_setting(t, oracle[t]), t, seeds) for t in tasks}
    return TransferAnalysis(tasks, list(seeds), k, stl, pairs, all_tasks, all_but, relations, oracle,
                            oracle_scores)


def first_phase_settings(tasks: Sequence[str]) -> list[frozenset[str]]:
    """STL, every pair, All and (for 3+ tasks) All-but-one, without duplicates, in a fixed order."""
    settings: list[frozenset[str]] = [stl_setting(t) for t in tasks]
    settings += [pair_setting(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]]
    settings.append(frozenset(tasks))
    if len(tasks) > 2:
        settings += [all_but_setting(tasks, s) for s in tasks]
    seen: set[frozenset[str]] = set()
    return [s for s in settings if not (s in seen or seen.add(s))]


def oracle_phase_settings(tasks: Sequence[str], oracle: Mapping[str, Sequence[str]]) -> list[frozenset[str]]:
    """The Oracle training sets that the first phase has not trained already."""
    done = set(first_phase_settings(tasks))
    out: list[frozenset[str]] = []
    for t in tasks:
        setting = oracle_setting(t, oracle[t])
        if setting not in done:
            done.add(setting)
            out.append(setting)
    return out
