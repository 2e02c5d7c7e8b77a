"""Hub names where the hub cannot be reached (`task_registry.hub`): the clear error comes in seconds, not after the
libraries' retries; a local path never asks the hub; where the hub answers, the libraries' own requests go to it.

Each case runs in a fresh interpreter without the offline mode the test session sets (conftest), the hub endpoint
($HF_ENDPOINT) pointed at this machine, and an empty hub cache.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

SCRIPT = """
import json, os, sys, time
import task_registry
from t2t_mtl.model.t5 import check_t5_checkpoint
from t2t_mtl.tokenizer import load_tokenizer

local, name = sys.argv[1], sys.argv[2]
loads = {"local tokenizer": lambda: len(load_tokenizer(local)),
         "missing local tokenizer": lambda: load_tokenizer(local + "/no/such"),
         "offline after local": lambda: os.environ.get("HF_HUB_OFFLINE"),
         "tokenizer": lambda: load_tokenizer(name), "model": lambda: check_t5_checkpoint(name),
         "dataset": lambda: task_registry.HFSource("glue", "rte").load("validation"),
         "offline at the end": lambda: os.environ.get("HF_HUB_OFFLINE")}
out = {}
for what, load in loads.items():
    start = time.perf_counter()
    try:
        result = load()
    except Exception as error:
        result = f"{type(error).__name__}: {error}"
    out[what] = [time.perf_counter() - start, result if isinstance(result, (int, str, type(None))) else repr(result)]
print(json.dumps(out))
"""

HUB_NAME = "google/t5-v1_1-small"


def _run(endpoint: str, tmp_path, t5_tokenizer_dir) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "T2T_MTL_DATA_DIR")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(t5_tokenizer_dir), HUB_NAME], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hub_names_fail_in_seconds_where_the_hub_cannot_be_reached(tmp_path, t5_tokenizer_dir):
    # was: 47 s for the tokenizer, 23 s for the model's config and 23 s for the dataset (retries backing off 1-8 s)
    out = _run(f"http://127.0.0.1:{_closed_port()}", tmp_path, t5_tokenizer_dir)
    assert out["local tokenizer"][1] == 32100  # T5's 32,000 pieces and 100 sentinels, read from the folder
    assert out["missing local tokenizer"][1].startswith("TokenizerLoadError: could not load tokenizer")
    assert out["offline after local"][1] is None  # a local path, a missing one too, asks no hub
    assert out["tokenizer"][1].startswith(f"TokenizerLoadError: could not load tokenizer '{HUB_NAME}'")
    assert out["model"][1].startswith(f"ModelBuildError: model.name_or_path '{HUB_NAME}' could not be loaded")
    assert out["dataset"][1].startswith("DataSourceError: hub dataset glue/rte split 'validation' could not be loaded")
    assert all(out[what][0] < 15 for what in ("tokenizer", "model", "dataset")), out
    assert out["offline at the end"][1] == "1"  # (handed to the processes it starts)


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """A hub that answers every request with 404 and records the paths asked for."""

    paths: list = []

    def _answer(self) -> None:
        self.paths.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


def test_where_the_hub_answers_the_libraries_ask_it_as_before(tmp_path, t5_tokenizer_dir):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = _run(f"http://127.0.0.1:{server.server_port}", tmp_path, t5_tokenizer_dir)
    finally:
        server.shutdown()
    asked = _NoSuchRepo.paths
    assert any(path.startswith(f"/{HUB_NAME}/") for path in asked), asked  # transformers' own requests
    assert any("glue" in path for path in asked), asked  # and datasets'
    assert out["offline at the end"][1] is None and out["tokenizer"][1].startswith("TokenizerLoadError"), out


def test_local_files_load_through_a_file_reader_without_datasets_private_reader_list(tmp_path, monkeypatch):
    # was (with the hub check's first form): HFSource("json", data_files=...) refused by is_file_builder when the
    # installed datasets lacks its private list of file readers, where it had loaded before
    from task_registry import file_formats, sources

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"x": "a"}\n{"x": "b"}\n')
    monkeypatch.setattr(file_formats, "_PACKAGED_DATASETS_MODULES", None)
    loaded = sources.HFSource("json", data_files={"train": str(rows)}).load("train")
    assert loaded["x"] == ["a", "b"]


def test_a_name_lookup_that_hangs_counts_as_no_answer_within_the_probe_timeout(monkeypatch):
    # was: the probe's timeout bounded connecting and reading only; a resolver that hung held the load for as long
    from task_registry import hub

    released = threading.Event()

    def hanging_lookup(*args, **kwargs):
        released.wait(30)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    start = time.perf_counter()
    try:
        answered = hub._answers_in_time("http://hub.invalid", 0.3)
    finally:
        released.set()
    assert answered is False and time.perf_counter() - start < 10


def test_a_hub_model_checked_first_fails_in_seconds_where_the_hub_cannot_be_reached(tmp_path):
    # mutation testing: check_t5_checkpoint not asking whether the hub answers passed every test, whose script loaded
    # a hub tokenizer first (which set the offline mode for the process); a run with a local tokenizer checks the
    # hub model first, which then took the libraries' retries (23 s)
    code = ("import time\n"
            "from t2t_mtl.model.t5 import check_t5_checkpoint\n"
            "start = time.perf_counter()\n"
            "try:\n"
            f"    check_t5_checkpoint({HUB_NAME!r})\n"
            "except Exception as error:\n"
            "    print(round(time.perf_counter() - start, 1), type(error).__name__, error)\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "T2T_MTL_DATA_DIR")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HOME=str(tmp_path / "hf_home"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, error = done.stdout.split(" ", 1)
    assert error.startswith(f"ModelBuildError model.name_or_path '{HUB_NAME}' could not be loaded"), done.stdout
    assert float(seconds) < 15, done.stdout
