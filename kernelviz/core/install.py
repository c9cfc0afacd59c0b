"""Is PyTorch installed so that torchvision can run on it? A torch and a torchvision from different builds (a CPU
torch beside a CUDA torchvision, or versions that were not released together) make every command die deep in an
import (``operator torchvision::nms does not exist``); this says it in one line, from the installed packages'
metadata, without importing either.

    python -m kernelviz.core.install      # the versions, and what to do when they do not match
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__all__ = ["install_problem", "versions"]

#: Where the CPU builds of torch and torchvision come from, together.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def versions() -> dict[str, str | None]:
    """The installed versions of torch and torchvision (``None``: not installed), and what torchvision asks of
    torch (its requirement's specifier, ``>=2.14.0`` or ``==2.14.1``)."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    from packaging.requirements import InvalidRequirement, Requirement

    wants = None
    try:
        for line in metadata.requires("torchvision") or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.name == "torch" and requirement.marker is None:
                wants = str(requirement.specifier)
    except metadata.PackageNotFoundError:
        pass
    return {"torch": version("torch"), "torchvision": version("torchvision"), "torchvision_needs": wants}


def _build(version: str) -> str:
    """The build of a version: its local tag (``cpu``, ``cu128``, ``rocm6.2``), or for PyPI's untagged wheels what
    they are built for there (CUDA on Linux x86-64, the CPU elsewhere)."""
    tag = version.partition("+")[2]
    if tag:
        return tag
    return "cuda" if sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64") else "cpu"


def _same_build(a: str, b: str) -> bool:
    if a == b:
        return True
    return {a, b} <= {"cuda"} | {x for x in (a, b) if x.startswith("cu")}  # PyPI's CUDA build beside a cuNNN one


def install_problem(found: dict[str, str | None] | None = None) -> str | None:
    """One line that says what is wrong with the torch/torchvision pair, or ``None`` when they go together.

    Args:
        found: the versions (:func:`versions`); default: those installed.
    """
    from packaging.specifiers import SpecifierSet

    found = versions() if found is None else found
    torch, vision, needs = found.get("torch"), found.get("torchvision"), found.get("torchvision_needs")
    if torch is None or vision is None:
        return None
    released = not needs or SpecifierSet(needs).contains(torch.partition("+")[0], prereleases=True)
    builds = _build(torch), _build(vision)
    if released and _same_build(*builds):
        return None
    target = torch.partition("+")[0]
    why = (
        f"torchvision {vision} needs torch {needs}"
        if not released and needs
        else f"they come from different builds ({builds[0]} and {builds[1]})"
    )
    return (
        f"torch {torch} and torchvision {vision} do not go together: {why}. Reinstall both from one index, e.g. "
        f"pip install --force-reinstall torch=={target} torchvision --index-url {CPU_INDEX} (or the CUDA index of "
        "your GPU)"
    )


if __name__ == "__main__":
    print(", ".join(f"{k} {v}" for k, v in versions().items()))
    print(install_problem() or "torch and torchvision go together")
