"""The installed packages against t2t-mtl's own requirements, as its installed distribution lists them (setup.py's
INSTALL_REQUIRES): an environment that already held older versions, into which t2t-mtl was installed without pip
resolving them (`pip install --no-deps`, a conda environment), is refused when a command starts, naming each package,
its installed version and the one needed, instead of failing deep inside a run or, as transformers before 5.3 did,
silently reading T5's vocabulary without its normalisation (NFKC characters became <unk>)."""
from __future__ import annotations

import importlib.metadata
from typing import List, Optional

#: the distribution whose requirements are checked
DISTRIBUTION = "t2t-mtl"


def unmet_requirements(distribution: Optional[str] = None) -> List[str]:
    """One line per requirement of `distribution` (default `DISTRIBUTION`) that the installed packages do not meet:
    its unconditional requirements and those whose environment marker holds here (extras are not checked), each
    naming the package, the version installed (or that none is), the requirement and the pip command meeting it.
    [] where `distribution` is not installed (a checkout run from PYTHONPATH: no requirements to read)."""
    try:
        lines = importlib.metadata.requires(distribution or DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    from packaging.requirements import Requirement  # (not needed above: a Python without t2t-mtl may lack it)

    problems = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        needed = f"{requirement.name}{requirement.specifier}"
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement.name} is not installed; t2t-mtl needs {needed} (pip install '{needed}')")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement.name} {installed} is installed; t2t-mtl needs {needed} "
                            f"(pip install '{needed}')")
    return problems
