"""Our top-level packages must not take an import name that another installed distribution owns.

transformers ≥ 5.25 requires Hugging Face's `kernels` and imports it with its modeling code; a top-level
`kernels` of ours (the repository root is on sys.path in tests and `python -m` runs) shadowed it and every
`import transformers.models.t5` failed.
"""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUR_DISTRIBUTION = "t2t-mtl"


def _our_top_level_packages() -> list[str]:
    return sorted(path.parent.name for path in REPO.glob("*/__init__.py") if path.parent.name != "tests")


def test_top_level_packages_are_ours_alone():
    owners = importlib.metadata.packages_distributions()
    assert _our_top_level_packages(), f"no top-level packages found under {REPO}"
    for name in _our_top_level_packages():
        others = sorted({dist for dist in owners.get(name, []) if dist.replace("_", "-") != OUR_DISTRIBUTION})
        assert not others, f"top-level package {name!r} is also installed by {others}: one shadows the other"


def test_transformers_t5_imports_from_the_repository_root():
    """The way tests and `python -m t2t_mtl` import: the repository root first on sys.path."""
    result = subprocess.run([sys.executable, "-c", "import transformers.models.t5.modeling_t5"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
