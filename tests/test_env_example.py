"""Every environment variable the service reads is documented, with its true default, in
deploy/calcinosis-cds.env.example and in the README's Settings table: a new setting cannot go
undocumented."""

from __future__ import annotations

import re
from typing import Any

from cds_service.devtools.cli import SERVE_ENVIRONMENT
from cds_service.observability import MULTIPROC_ENV
from cds_service.settings import Settings
from tests.conftest import ROOT

EXAMPLE = ROOT / "deploy" / "calcinosis-cds.env.example"
# Read by gunicorn itself, which `serve` runs with the environment it was given.
GUNICORN_VARIABLES = {"GUNICORN_CMD_ARGS"}
# Read by the command line's own output, not by the service (https://no-color.org).
NOT_SETTINGS = {"NO_COLOR"}
# A literal environment lookup in the service's code: os.environ.get("X"), os.environ["X"].
LOOKUP = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""")


class _Recorder(dict[str, str]):
    """An empty environment that remembers every variable looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def settings_variables() -> set[str]:
    """What Settings.from_env reads (`in` tests, for the settings that were removed and are
    refused, are not lookups)."""
    env = _Recorder()
    Settings.from_env(env)
    return env.read


def variables_read() -> set[str]:
    in_code = {
        name
        for source in (ROOT / "cds_service").rglob("*.py")
        for name in LOOKUP.findall(source.read_text(encoding="utf-8"))
    }
    serve = {var for var, _default in SERVE_ENVIRONMENT.values()}
    found = settings_variables() | in_code | serve | {MULTIPROC_ENV} | GUNICORN_VARIABLES
    return found - NOT_SETTINGS


def example_values() -> dict[str, str]:
    """VAR -> value of the example's `# VAR=value` lines."""
    found = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r"# ?([A-Z][A-Z0-9_]*)=(.*)", line):
            found[match.group(1)] = match.group(2)
    return found


def readme_settings_rows() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.MULTILINE))


def test_the_recorder_sees_the_settings_tables() -> None:
    """A sanity check of the way variables are found: the table-driven settings are there."""
    read = settings_variables()
    assert {"CDS_MAX_BODY_BYTES", "CDS_SNOOZE_INFO", "CDS_RETAIN_ISSUED", "LOG_LEVEL"} <= read
    assert "CDS_SNOOZE_DAYS" not in read  # removed: refused, not a setting
    assert {"PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"} <= variables_read()


def test_every_variable_read_is_in_the_example_file() -> None:
    documented = set(example_values())
    assert sorted(variables_read() - documented) == []
    assert sorted(documented - variables_read()) == []  # nothing stale either


def test_every_variable_read_has_a_row_in_the_readme_settings_table() -> None:
    rows = readme_settings_rows()
    assert sorted(variables_read() - rows) == []
    assert sorted(rows - variables_read()) == []


def test_the_example_sets_nothing_and_shows_the_true_defaults() -> None:
    """All commented out (loading it changes nothing), and each value shown is the default."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert all(not line or line.startswith("#") for line in text.splitlines())
    defaults = Settings.from_env({})
    serve_defaults = dict(SERVE_ENVIRONMENT.values())
    for var, value in example_values().items():
        if not value:
            continue  # "no value": the default is described in the comment
        if var in serve_defaults:
            assert value == serve_defaults[var], var
        else:
            assert Settings.from_env({var: value}) == defaults, var
