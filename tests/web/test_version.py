"""What is running: GET /version, and the version of the served OpenAPI document."""

from __future__ import annotations

import platform
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from cds_service import observability
from tests.conftest import ROOT, app_with
from tests.openapi_doc import DOCUMENT, schema_errors

INSTALLED = metadata.version("calcinosis-cds")


def test_version_names_the_package_knowledge_and_python(shared_client: FlaskClient) -> None:
    response = shared_client.get("/version", headers={"Authorization": "Bearer nonsense"})
    assert response.status_code == 200
    body = response.get_json()
    knowledge = shared_client.application.extensions["cds_engine"].knowledge_version
    assert body == {
        "service": "calcinosis-cds",
        "version": INSTALLED,
        "knowledgeVersion": knowledge,
        "python": platform.python_version(),
    }
    assert not schema_errors("#/components/schemas/Version", body)


def test_the_served_document_has_the_package_version(shared_client: FlaskClient) -> None:
    assert shared_client.get("/openapi.json").get_json()["info"]["version"] == INSTALLED


def test_the_document_file_keeps_step_with_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert DOCUMENT["info"]["version"] == project["version"], "update info.version"


def test_without_installed_metadata_the_version_comes_from_pyproject(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def not_installed(_name: str) -> str:
        raise metadata.PackageNotFoundError("calcinosis-cds")

    monkeypatch.setattr(observability.metadata, "version", not_installed)
    observability.package_version.cache_clear()
    try:
        pyproject = tmp_path / "pyproject.toml"
        pyproject.write_text('[project]\nname = "calcinosis-cds"\nversion = "9.8.7"\n')
        monkeypatch.setattr(observability, "PYPROJECT", pyproject)
        assert observability.package_version() == "9.8.7"
        observability.package_version.cache_clear()
        monkeypatch.setattr(observability, "PYPROJECT", tmp_path / "absent.toml")
        assert observability.package_version() == "unknown"
    finally:
        monkeypatch.undo()
        observability.package_version.cache_clear()
    assert observability.package_version() == INSTALLED


def test_version_needs_no_token_like_livez(tmp_path: Path) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text('{"issuers": [{"iss": "https://ehr.example", "jwks_url": "https://x/j"}]}')
    with app_with(tmp_path, auth="jwt", trusted_issuers_file=issuers) as app:
        client = app.test_client()
        assert client.get("/cds-services").status_code == 401
        assert client.get("/version").status_code == 200
