"""The wheel alone runs the service: built from exactly what the Dockerfile's build stage copies,
installed into a fresh venv outside the repository, it finds its card files, fixture set and
cited documents with no setting, and `check-knowledge`, `invoke` and `serve` work.

The dependencies are not downloaded: the new venv sees this interpreter's site-packages through
a .pth line (a .pth file there is not run that way, so an editable install of the project in
this venv stays invisible, and the package can only come from the wheel)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, free_port, start_server, wait_until_up
from tests.dockerfile import build_context_sources

COMMAND = "calcinosis-cds"
FIXTURE = "21-select-aluminium-egfr-22"  # order-select: one critical card


def _run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - pip, venv and the wheel's command, fixed arguments
        args, capture_output=True, text=True, check=False, env=env, cwd=cwd
    )


def _build_wheel(work: Path) -> Path:
    """The wheel, built (without build isolation: offline) from a copy of the build context."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (backend,) = (Requirement(r) for r in pyproject["build-system"]["requires"])
    try:
        have = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        have = None
    if have is None or not backend.specifier.contains(have):
        pytest.fail(
            f"{backend} is needed to build the wheel (here: {have}): pip install -e '.[test]'"
        )
    source = work / "src"
    for relative in build_context_sources():
        origin, target = ROOT / relative, source / relative
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    flags = ["--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", str(work / "dist")]
    built = _run([sys.executable, "-m", "pip", "wheel", *flags, str(source)])
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("calcinosis_cds-*.whl")
    return wheel


def _install(wheel: Path, venv: Path) -> dict[str, str]:
    """A venv holding only the wheel; the environment to run its commands in."""
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    flags = ["--quiet", "--no-deps", "--no-index"]
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", *flags, str(wheel)]
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # This interpreter's site-packages folders, as plain paths (their .pth files are not run).
    here = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (Path(purelib.stdout.strip()) / "_dependencies.pth").write_text(
        "".join(f"{p}\n" for p in here), encoding="utf-8"
    )
    drop = ("PYTHONPATH", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k not in drop}
    return {**env, "LOG_FORMAT": "json", "DATABASE_URL": f"sqlite:///{venv.parent / 's.sqlite3'}"}


def test_the_wheel_alone_runs_the_service(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    content = "cds_service/_content/"
    assert f"{content}cards/_common.yaml" in names
    assert f"{content}fixtures/order-select/{FIXTURE}.request.json" in names
    assert f"{content}fixtures/order-select/{FIXTURE}.expected.json" in names
    assert f"{content}docs/sources.md" in names
    # Only what runs: no golden responses, no generator, nothing outside the package.
    assert not [n for n in names if "golden" in n or n.endswith("generator.py")]
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"cds_service", dist_info}
    assert "License-Expression: LicenseRef-Proprietary" in meta
    assert "Classifier: Framework :: Flask" in meta
    assert 'Requires-Dist: psycopg[binary]<4,>=3.2; extra == "postgres"' in meta

    venv = tmp_path / "venv"
    env = _install(wheel, venv)
    work = tmp_path / "work"  # outside the repository, and empty
    work.mkdir()
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import cds_service; print(cds_service.__file__)"],
        env,
        work,
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    def command(*args: str) -> list[str]:
        return [str(venv / "bin" / COMMAND), *args]

    # The knowledge check replays every fixture (the slowest step): it runs meanwhile.
    check_log = tmp_path / "check.log"
    with check_log.open("w") as sink:
        check = subprocess.Popen(command("check-knowledge"), env=env, cwd=work, stdout=sink)  # noqa: S603
    try:
        invoked = _run(command("invoke", FIXTURE, "--lang", "fr", "--json"), env, work)
        assert invoked.returncode == 0, invoked.stderr
        assert [c["indicator"] for c in json.loads(invoked.stdout)["cards"]] == ["critical"]
        _serve(command, env, work)
        assert check.wait(timeout=120) == 0, check_log.read_text()
    finally:
        check.kill()
    report = check_log.read_text()
    assert f"cards in {venv}" in report
    assert re.search(r"^All \d+ checks passed", report, re.MULTILINE), report


def _serve(command: Callable[..., list[str]], env: dict[str, str], work: Path) -> None:
    """`serve` answers on a free port, offers the packaged fixtures, and stops on SIGTERM."""
    port = free_port()
    log = work / "serve.log"
    command = command("serve", "--port", str(port), "--workers", "1", "--threads", "4")
    served = start_server(command, env, log, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/livez", served, log)
        assert len(httpx.get(f"{base}/cds-services").json()["services"]) == 3
        offered = httpx.get(f"{base}/preview/fixtures").json()
        assert {"hook": "order-select", "name": FIXTURE} in [
            {"hook": f["hook"], "name": f["name"]} for f in offered
        ]
    finally:
        served.send_signal(signal.SIGTERM)
        status = served.wait(timeout=30)
    assert status == 0, log.read_text()[-3000:]
