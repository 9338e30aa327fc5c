"""Load the thresholds file once."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

THRESHOLDS_FILE = Path(__file__).resolve().parent / "thresholds.yaml"


@cache
def thresholds() -> dict[str, Any]:
    """The rule thresholds (read once per process)."""
    return yaml.safe_load(THRESHOLDS_FILE.read_text(encoding="utf-8"))
