"""The proxy tier's metadata admits every LiteLLM cell of the matrix, as that cell pins it.

`./dev matrix` installs `otel-bridge[proxy]` into each cell's deployment and fails the build if
LiteLLM or langfuse move; this checks the same thing on the metadata, without an install: every
requirement of the base package and of the `proxy` extra is met by every cell's pinned versions
(constraints/matrix/litellm-*.txt, frozen from a resolved install), and the extra says nothing
about langfuse, whose major the LiteLLM release decides.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CELLS = sorted((ROOT / "constraints" / "matrix").glob("litellm-*.txt"))
PINNED = ROOT / "constraints" / "proxy.txt"


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def proxy_requirements() -> list[Requirement]:
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    base = project["dependencies"]
    assert isinstance(base, list)
    return [Requirement(r) for r in [*base, *extras["proxy"]]]


def pins(path: Path) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if match:
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def test_there_are_cells_from_the_oldest_to_the_newest() -> None:
    versions = sorted(pins(c)[canonicalize_name("litellm")] for c in CELLS)
    assert len(versions) >= 5, CELLS
    assert versions[0] < Version("1.75")
    assert versions[-1] >= Version("1.108")


def test_the_proxy_extra_leaves_langfuse_to_litellm() -> None:
    names = {canonicalize_name(r.name) for r in proxy_requirements()}
    assert "langfuse" not in names
    (litellm,) = [r for r in proxy_requirements() if r.name == "litellm"]
    # A floor only: no upper bound that would exclude a release the matrix passes.
    assert all(spec.operator == ">=" for spec in litellm.specifier), litellm


@pytest.mark.parametrize("cell", [*CELLS, PINNED], ids=lambda p: p.stem)
def test_every_cell_satisfies_the_proxy_tier(cell: Path) -> None:
    pinned = pins(cell)
    for requirement in proxy_requirements():
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{cell.name} has no {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{cell.name}: {requirement.name} {version} is outside {requirement}: installing "
            "the proxy tier would move it"
        )
