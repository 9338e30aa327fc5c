"""Settings come from the environment, with embedded defaults and clear errors."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from cds_service import settings as settings_module
from cds_service.settings import Settings, SettingsError, content_dir
from tests.conftest import ROOT


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("sqlite:///")
    assert settings.default_language == "en"
    assert settings.cors_origins == ("*",)
    assert (settings.cards_dir / "_common.yaml").is_file()


def test_content_is_found_in_the_installed_package_or_else_in_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed wheel carries cards/ and fixtures/ under cds_service/_content/; a checkout
    (and an editable install) has them at the top of the repository. No setting either way."""
    assert content_dir("cards") == ROOT / "cards"  # no packaged copy in a checkout
    monkeypatch.setattr(settings_module, "PACKAGED_CONTENT_DIR", tmp_path)
    (tmp_path / "cards").mkdir()
    assert content_dir("cards") == tmp_path / "cards"
    assert content_dir("fixtures") == ROOT / "fixtures"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg://u@h/db",
            r"driver psycopg is not installed: install the postgres extra "
            r"\(pip install 'calcinosis-cds\[postgres\]'\)",
        ),
        ("postgresql://u@h/db", "SQLAlchemy's default driver, psycopg2, which is not installed"),
    ],
)
def test_a_postgresql_url_without_its_driver_is_refused_in_one_line(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg comes with the postgres extra: without it, a PostgreSQL URL stops the service at
    start with what to install, not with an import error in every worker."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # find_spec: not installed
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env({"DATABASE_URL": url})
    assert "\n" not in str(refused.value)
    assert Settings.from_env({}).database_url.startswith("sqlite")  # SQLite needs no driver


def test_values_from_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+psycopg://u@h/db",
            "CDS_DEFAULT_LANGUAGE": "FR",
            "CDS_MAX_BODY_BYTES": "2048",
            "CDS_CORS_ORIGINS": "https://a.example, https://b.example",
            "CDS_CARDS_DIR": str(Path(__file__).resolve().parents[1] / "cards"),
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.default_language == "fr"
    assert settings.max_body_bytes == 2048
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.log_level == "DEBUG"


def test_fhir_fetch_settings() -> None:
    settings = Settings.from_env(
        {
            "CDS_FHIR_SERVERS": "https://ehr.example.org/fhir, https://sandbox.example.org/r4",
            "CDS_FHIR_TIMEOUT_MS": "300",
            "CDS_FHIR_DEADLINE_MS": "450",
            "CDS_FHIR_PAGE_LIMIT": "3",
        }
    )
    assert settings.fhir_servers == (
        "https://ehr.example.org/fhir",
        "https://sandbox.example.org/r4",
    )
    assert (settings.fhir_timeout_ms, settings.fhir_deadline_ms, settings.fhir_page_limit) == (
        300,
        450,
        3,
    )
    assert Settings.from_env({}).fhir_servers == ()  # nothing is fetched unless configured


def test_fhir_size_caps() -> None:
    defaults = Settings.from_env({})
    assert (defaults.fhir_max_query_bytes, defaults.fhir_max_call_bytes) == (8388608, 16777216)
    settings = Settings.from_env(
        {"CDS_FHIR_MAX_QUERY_BYTES": "1048576", "CDS_FHIR_MAX_CALL_BYTES": "2097152"}
    )
    assert (settings.fhir_max_query_bytes, settings.fhir_max_call_bytes) == (1048576, 2097152)


@pytest.mark.parametrize(
    ("tag", "language"),
    [("fr-FR", "fr"), ("en-GB", "en"), ("FR", "fr"), (" fr-ca ", "fr"), ("en_US", "en")],
)
def test_default_language_accepts_a_language_tag(tag: str, language: str) -> None:
    """As Accept-Language does: `fr-FR` is French."""
    assert Settings.from_env({"CDS_DEFAULT_LANGUAGE": tag}).default_language == language


@pytest.mark.parametrize("tag", ["de", "de-FR", "fr-", "french", "f", "fr FR", "fr;q=1", "*"])
def test_default_language_refuses_anything_else_in_one_line(tag: str) -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"CDS_DEFAULT_LANGUAGE": tag})
    assert str(exc.value).startswith("CDS_DEFAULT_LANGUAGE must be one of en, fr")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CDS_DEFAULT_LANGUAGE": "de"}, "CDS_DEFAULT_LANGUAGE"),
        ({"CDS_MAX_BODY_BYTES": "lots"}, "CDS_MAX_BODY_BYTES"),
        ({"CDS_MAX_BODY_BYTES": "10"}, "CDS_MAX_BODY_BYTES"),
        ({"CDS_CARDS_DIR": "/no/such/dir"}, "CDS_CARDS_DIR"),
        ({"CDS_FHIR_SERVERS": "ehr.example.org/fhir"}, "CDS_FHIR_SERVERS"),
        ({"CDS_FHIR_DEADLINE_MS": "0"}, "CDS_FHIR_DEADLINE_MS"),
        ({"CDS_FHIR_TIMEOUT_MS": "soon"}, "CDS_FHIR_TIMEOUT_MS"),
        ({"CDS_FHIR_PAGE_LIMIT": "-1"}, "CDS_FHIR_PAGE_LIMIT"),
        ({"CDS_FHIR_MAX_QUERY_BYTES": "512"}, "CDS_FHIR_MAX_QUERY_BYTES must be at least 1024"),
        ({"CDS_FHIR_MAX_CALL_BYTES": "8MB"}, "CDS_FHIR_MAX_CALL_BYTES"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRIT"),
        ({"DATABASE_URL": "postgres://u@h/db"}, r"postgres://.*write postgresql\+psycopg://"),
        (
            {"CDS_FHIR_MAX_CALL_BYTES": "4194304"},
            "CDS_FHIR_MAX_QUERY_BYTES must not be larger than CDS_FHIR_MAX_CALL_BYTES",
        ),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_production_mode_refuses_an_unsafe_configuration(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"CDS_PRODUCTION": "1"})
    message = str(exc.value)
    for variable in ("CDS_AUTH", "CDS_PUBLIC_BASE_URL", "CDS_HASH_KEY"):
        assert variable in message
    issuers = tmp_path / "issuers.json"
    issuers.write_text('{"issuers": []}')
    good = {
        "CDS_PRODUCTION": "1",
        "CDS_AUTH": "jwt",
        "CDS_TRUSTED_ISSUERS": str(issuers),
        "CDS_PUBLIC_BASE_URL": "https://cds.example.org/",
        "CDS_HASH_KEY": "k" * 40,
        "CDS_FHIR_SERVERS": "https://ehr.example.org/fhir",
    }
    settings = Settings.from_env(good)
    assert settings.public_base_url == "https://cds.example.org"
    with pytest.raises(SettingsError, match="https"):
        Settings.from_env({**good, "CDS_FHIR_SERVERS": "http://ehr.example.org/fhir"})
    # The preview page (a developer tool) is off in production, and cannot be turned on there.
    assert settings.preview is False
    assert Settings.from_env({}).preview is True
    with pytest.raises(SettingsError, match="CDS_PREVIEW must be off"):
        Settings.from_env({**good, "CDS_PREVIEW": "on"})
    with pytest.raises(SettingsError, match="CDS_PRODUCTION must be on or off"):
        Settings.from_env({**good, "CDS_PRODUCTION": "maybe"})


def test_jwt_needs_trusted_issuers() -> None:
    with pytest.raises(SettingsError, match="CDS_TRUSTED_ISSUERS"):
        Settings.from_env({"CDS_AUTH": "jwt"})
    with pytest.raises(SettingsError, match="CDS_AUTH"):
        Settings.from_env({"CDS_AUTH": "basic"})


def test_snooze_defaults_follow_the_severity() -> None:
    settings = Settings.from_env({})
    with_reason = {i: settings.snooze_for(i, reason=True) for i in ("critical", "warning", "info")}
    without = {i: settings.snooze_for(i, reason=False) for i in ("critical", "warning", "info")}
    assert with_reason == {
        "critical": timedelta(hours=24),
        "warning": timedelta(days=7),
        "info": timedelta(days=30),
    }
    assert without == {
        "critical": timedelta(hours=1),
        "warning": timedelta(days=1),
        "info": timedelta(days=7),
    }
    assert settings.snooze_encounter_bound == ("critical",)
    # An indicator the service does not issue is snoozed as a critical card.
    assert settings.snooze_for("urgent", reason=True) == timedelta(hours=24)


def test_snooze_settings_from_environment() -> None:
    settings = Settings.from_env(
        {
            "CDS_SNOOZE_CRITICAL": "12h",
            "CDS_SNOOZE_WARNING": "3d",
            "CDS_SNOOZE_INFO": "14d",
            "CDS_SNOOZE_NO_REASON_CRITICAL": "0",
            "CDS_SNOOZE_NO_REASON_WARNING": "90m",
            "CDS_SNOOZE_NO_REASON_INFO": "2D",
            "CDS_SNOOZE_ENDS_WITH_ENCOUNTER": "critical, Warning",
        }
    )
    assert (settings.snooze_critical, settings.snooze_warning, settings.snooze_info) == (
        timedelta(hours=12),
        timedelta(days=3),
        timedelta(days=14),
    )
    assert (
        settings.snooze_no_reason_critical,
        settings.snooze_no_reason_warning,
        settings.snooze_no_reason_info,
    ) == (timedelta(0), timedelta(minutes=90), timedelta(days=2))
    assert settings.snooze_encounter_bound == ("critical", "warning")
    assert (
        Settings.from_env({"CDS_SNOOZE_ENDS_WITH_ENCOUNTER": "none"}).snooze_encounter_bound == ()
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CDS_SNOOZE_CRITICAL": "24"}, "CDS_SNOOZE_CRITICAL must be a duration"),
        ({"CDS_SNOOZE_WARNING": "1.5d"}, "CDS_SNOOZE_WARNING must be a duration"),
        ({"CDS_SNOOZE_INFO": "-1d"}, "CDS_SNOOZE_INFO must be a duration"),
        ({"CDS_SNOOZE_INFO": "a week"}, "CDS_SNOOZE_INFO must be a duration"),
        ({"CDS_SNOOZE_INFO": "400d"}, "CDS_SNOOZE_INFO must be between 0 and 365d"),
        (
            {"CDS_SNOOZE_NO_REASON_WARNING": "30d"},
            "CDS_SNOOZE_NO_REASON_WARNING must not be longer than CDS_SNOOZE_WARNING",
        ),
        (
            {"CDS_SNOOZE_CRITICAL": "30m"},
            "CDS_SNOOZE_NO_REASON_CRITICAL must not be longer than CDS_SNOOZE_CRITICAL",
        ),
        ({"CDS_SNOOZE_ENDS_WITH_ENCOUNTER": "urgent"}, "CDS_SNOOZE_ENDS_WITH_ENCOUNTER"),
        ({"CDS_SNOOZE_DAYS": "30"}, "CDS_SNOOZE_DAYS is no longer read: use CDS_SNOOZE_CRITICAL"),
    ],
)
def test_bad_snooze_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
