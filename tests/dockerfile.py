"""Reading the Dockerfile and .dockerignore as the image builder does, for tests/test_image.py
and tests/test_wheel.py (which builds the wheel from exactly what the build stage copies)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN...
    args: str  # the rest, continuation lines joined


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    found, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue  # comments may also stand between continuation lines
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return found


def stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The instructions of each stage (what comes before the first FROM is left out)."""
    result: list[list[Instruction]] = []
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def copy_sources(instruction: Instruction) -> list[str]:
    """The build-context paths a COPY takes (none for a COPY --from another stage)."""
    args = instruction.args
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return []
    paths = [w for w in words if not w.startswith("--")]
    return [p.rstrip("/") for p in paths[:-1]]


def build_context_sources() -> list[str]:
    """Every build-context path the Dockerfile copies, in order."""
    return [
        source
        for stage in stages()
        for instruction in stage
        if instruction.keyword == "COPY"
        for source in copy_sources(instruction)
    ]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception "!...", pattern) for each line of .dockerignore."""
    patterns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        patterns.append((exception, _pattern_regex(line.lstrip("!").strip("/"))))
    return patterns


def ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the builder leaves `relative` out of the context: the last pattern that matches
    the path or one of its parent folders decides, as in Docker."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exception, pattern in patterns:
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = not exception
    return excluded
