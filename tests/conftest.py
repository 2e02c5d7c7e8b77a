"""Shared fixtures: where the read-only shared assets live, and the Triton interpreter on CPU.

The shared assets (`../shared` beside the repository) are never copied into the repo. A test that needs
them fails — never skips — with a message that says where they belong.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Triton reads this when a kernel is decorated, so it must be set before any kernel module is imported.
if not os.environ.get("T2T_MTL_TRITON_ON_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The processes the tests start find this environment's programs first, as in an activated virtual environment (CI's):
# torch builds DeepSpeed's CPU op with the first `ninja` on PATH, and two ninja releases (a system's 1.11, the venv's
# 1.13) each read the other's build log as a changed command, so the op was rebuilt (minutes) at every switch between
# them, e.g. before and after the SLURM test, whose job script activates the venv.
if os.path.dirname(sys.executable) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: multi-process or long cases; still run in CI")


def _shared_path(*parts: str) -> Path:
    root = Path(os.environ.get("T2T_MTL_SHARED", REPO_ROOT.parent / "shared"))
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared asset {path} is missing: the read-only shared folder must sit beside the repository "
            f"(../shared with data/, promptsource-templates/, bigbench/, tokenizers/t5/) or be named by "
            f"T2T_MTL_SHARED",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """`../shared/data`: real datasets in the Hugging Face schema, `<hub path>/<config>/<split>.jsonl`."""
    return _shared_path("data")


@pytest.fixture(scope="session")
def promptsource_dir() -> Path:
    """`../shared/promptsource-templates`: promptsource's `templates.yaml` files."""
    return _shared_path("promptsource-templates")


@pytest.fixture(scope="session")
def bigbench_dir() -> Path:
    """`../shared/bigbench`: BIG-bench JSON tasks (evaluation only)."""
    return _shared_path("bigbench")


@pytest.fixture(scope="session")
def t5_tokenizer_dir() -> Path:
    """`../shared/tokenizers/t5`: T5's real vocabulary (no weights)."""
    return _shared_path("tokenizers", "t5")


@pytest.fixture(scope="session")
def t5_tokenizer(t5_tokenizer_dir):
    """T5's own tokenizer, loaded once (tests must not add tokens to it)."""
    from t2t_mtl.tokenizer import load_tokenizer

    return load_tokenizer(t5_tokenizer_dir)


@pytest.fixture
def locked_folder(monkeypatch) -> str:
    """Creating a folder named `locked` (anywhere) fails with a PermissionError, as in a folder the user may not
    write; returns that name."""
    real_mkdir = Path.mkdir

    def refusing(self, *args, **kwargs):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing)
    return "locked"


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: one intra-op thread is fastest and steady on a shared 2-core CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def restored_component_tables(monkeypatch):
    """The sampler and weighting tables (STRATEGIES, METHODS) as they were before the test, and the modules it
    imported (a task module registering its own) forgotten."""
    import sys

    from t2t_mtl.sampling import STRATEGIES
    from t2t_mtl.weighting import METHODS

    strategies, methods, modules = dict(STRATEGIES), dict(METHODS), set(sys.modules)
    yield
    for table, saved in ((STRATEGIES, strategies), (METHODS, methods)):
        table.clear()
        table.update(saved)
    for name in set(sys.modules) - modules:
        monkeypatch.delitem(sys.modules, name)
