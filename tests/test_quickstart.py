"""The README's main command end to end: `t2t-mtl train` (the packaged quickstart, shortened to 20 steps on
fewer examples) trains, scores held-in exact match, then evaluates the held-out cluster zero-shot and writes
the evaluation report into the run directory."""
from __future__ import annotations

import json
import subprocess
import sys

from engine_helpers import subprocess_env

SHORT = ["training.steps=20", "training.log_every=10", "training.checkpoint_every=0", "training.progress_bar=false",
         "training.tensorboard=false", "training.num_threads=1", "data.max_examples_per_task=300",
         "tokenizer.train.max_examples_per_task=300", "data.validation_examples=8", "evaluation.max_examples=12"]


def test_quickstart_trains_then_evaluates_the_held_out_cluster(tmp_path):
    import task_registry
    from t2t_mtl.config import load_config

    run_dir = tmp_path / "quickstart"
    sets = [arg for kv in [*SHORT, f"training.output_dir={run_dir}"] for arg in ("--set", kv)]
    proc = subprocess.run([sys.executable, "-m", "t2t_mtl", "train", *sets], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-in exact match over" in proc.stdout
    assert "held-out zero-shot macro average over" in proc.stdout

    cfg = load_config("quickstart")
    assert cfg.evaluation.get("held_out") is True and cfg.data.held_out_clusters
    task_registry.load_builtin_tasks()
    held_out = sorted(t for c in cfg.data.held_out_clusters for t in task_registry.list_tasks(cluster=c))
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    results = report["results"]
    assert sorted({r["task"] for r in results}) == held_out
    for task in held_out:  # every template of every held-out task, on the first 12 rows
        templates = task_registry.get_task(task).templates
        names = sorted(templates if isinstance(templates, dict) else [t.name for t in templates])
        assert sorted(r["template"] for r in results if r["task"] == task) == names
    assert all(r["num_examples"] == 12 and 0 <= r["score"] <= 100 for r in results)
    assert (run_dir / "eval" / "report.md").exists()
    trained = set(json.loads((run_dir / "logs" / "metrics.jsonl").read_text().splitlines()[-1])["task_examples"])
    assert trained and not trained & set(held_out)  # the held-out cluster was never trained on
