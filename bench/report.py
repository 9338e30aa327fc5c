"""What the benchmark (bench/run.py) and the fault battery (bench/chaos.py) both print and write:
the machine a run was measured on, and a block of the README between two markers."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def say(message: str = "") -> None:
    print(message, flush=True)


def machine_facts(*packages: str) -> str:
    """CPUs (with their model), system, Python and the versions of `packages`."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = " (" + line.split(":", 1)[1].strip() + ")"
                break
    versions = "".join(f", {name} {metadata.version(name)}" for name in packages)
    return (
        f"{os.cpu_count()} CPUs{model}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}{versions}"
    )


def write_readme(block: str, start_marker: str, end_marker: str) -> bool:
    """Put `block` between the two markers of README.md; False (said) when they are missing."""
    text = README.read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        say(f"NOTE: {README.name} has no {start_marker} / {end_marker} markers: not written")
        return False
    updated = text[: start + len(start_marker)] + "\n" + block + "\n" + text[end:]
    README.write_text(updated, encoding="utf-8")
    return True
