"""All configuration, read from the environment in one place.

Every setting has an embedded default so that the service runs with no configuration at all
(SQLite file under the working directory, English cards). `Settings.from_env()` is the only
place that reads `os.environ`; tests build `Settings` directly.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The content files (cards, fixture set, documents the knowledge check cites) are at the top of
# the repository in a checkout or an editable install, and under cds_service/_content/ in an
# installed wheel (build_content.py puts them there): no setting is needed to find them.
PACKAGED_CONTENT_DIR = PACKAGE_DIR / "_content"


def content_dir(name: str) -> Path:
    """The content folder `name` ("cards", "fixtures", "docs"): the installed wheel's copy,
    or else the repository's."""
    packaged = PACKAGED_CONTENT_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


DEFAULT_CARDS_DIR = content_dir("cards")
DEFAULT_FIXTURES_DIR = content_dir("fixtures")
SUPPORTED_LANGUAGES = ("en", "fr")
# Threads per gunicorn worker unless CDS_THREADS or --threads says otherwise: more than the slow
# clients one worker may meet at once (cds_service/serving.py).
DEFAULT_THREADS = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A language tag (`fr`, `fr-FR`, `en-GB`, `zh-Hant-TW`): its first subtag is the language.
LANGUAGE_TAG = re.compile(r"([a-z]{2,3})(?:[-_][a-z0-9]{1,8})*")


# Environment variable -> Settings field, for the integer settings.
INTEGER_SETTINGS = (
    ("CDS_MAX_BODY_BYTES", "max_body_bytes"),
    ("CDS_MAX_JSON_DEPTH", "max_json_depth"),
    ("CDS_FHIR_TIMEOUT_MS", "fhir_timeout_ms"),
    ("CDS_FHIR_DEADLINE_MS", "fhir_deadline_ms"),
    ("CDS_FHIR_PAGE_LIMIT", "fhir_page_limit"),
    ("CDS_FHIR_MAX_QUERY_BYTES", "fhir_max_query_bytes"),
    ("CDS_FHIR_MAX_CALL_BYTES", "fhir_max_call_bytes"),
    ("CDS_REPEAT_WINDOW_MINUTES", "repeat_window_minutes"),
    ("CDS_RISK_SCREENING_INTERVAL_DAYS", "risk_screening_interval_days"),
    ("CDS_STORE_DEADLINE_MS", "store_deadline_ms"),
    ("CDS_STORE_RETRY_SECONDS", "store_retry_seconds"),
    ("CDS_ISSUED_BUFFER", "issued_buffer"),
    ("CDS_CLIENT_TIMEOUT_SECONDS", "client_timeout_seconds"),
)
DEVELOPMENT_HASH_KEY = "calcinosis-cds-development-key"

# Card indicators, least urgent first (as in cds_service/cards/, which settings cannot import).
SNOOZE_INDICATORS = ("info", "warning", "critical")
# Environment variable -> Settings field, for the snooze durations (see the README, "Settings"):
# how long an overridden patient-view card stays hidden, by indicator, after an override with a
# reason and after one without (a plain "Dismiss").
SNOOZE_SETTINGS = (
    ("CDS_SNOOZE_CRITICAL", "snooze_critical"),
    ("CDS_SNOOZE_WARNING", "snooze_warning"),
    ("CDS_SNOOZE_INFO", "snooze_info"),
    ("CDS_SNOOZE_NO_REASON_CRITICAL", "snooze_no_reason_critical"),
    ("CDS_SNOOZE_NO_REASON_WARNING", "snooze_no_reason_warning"),
    ("CDS_SNOOZE_NO_REASON_INFO", "snooze_no_reason_info"),
)
# Environment variable -> Settings field, for the retention durations (see the README,
# "Retention and pruning"): how long rows are kept before `prune` deletes them (0: for ever).
RETENTION_SETTINGS = (
    ("CDS_RETAIN_ISSUED", "retain_issued"),
    ("CDS_RETAIN_FEEDBACK", "retain_feedback"),
    ("CDS_RETAIN_CAUTIONS", "retain_cautions"),
    ("CDS_RETAIN_SNOOZES", "retain_snoozes"),
)
MIN_RETENTION = timedelta(hours=1)  # shorter would lose a card before its feedback comes
MAX_SNOOZE = timedelta(days=365)
DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
# Settings that no longer exist, and what replaced them (refused rather than silently ignored).
REPLACED_SETTINGS = {
    "CDS_SNOOZE_DAYS": "CDS_SNOOZE_CRITICAL, CDS_SNOOZE_WARNING and CDS_SNOOZE_INFO (e.g. 30d)",
}


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message says which and why."""


# The PostgreSQL drivers a DATABASE_URL may name that this service knows (postgresql:// alone
# means psycopg2 to SQLAlchemy) -> the module; the driver comes with the `postgres` extra.
POSTGRES_DRIVERS = {"psycopg": "psycopg", "psycopg2": "psycopg2", "": "psycopg2"}
POSTGRES_EXTRA = "pip install 'calcinosis-cds[postgres]'"


def database_url_problem(url: str) -> str | None:
    """One line saying what is wrong with a PostgreSQL DATABASE_URL that SQLAlchemy would refuse
    with a bare "Can't load plugin" or an import error: the `postgres://` spelling (Heroku's,
    and many providers'), or a driver that is not installed. None otherwise."""
    dialect, _, driver = url.partition("://")[0].strip().lower().partition("+")
    if dialect == "postgres":
        return (
            "DATABASE_URL starts with postgres://, which SQLAlchemy does not read: "
            "write postgresql+psycopg:// (the rest of the URL unchanged)"
        )
    module = POSTGRES_DRIVERS.get(driver) if dialect == "postgresql" else None
    if module is None or importlib.util.find_spec(module) is not None:
        return None  # not PostgreSQL, a driver SQLAlchemy reports itself, or installed
    if module == "psycopg":
        return (
            "DATABASE_URL names PostgreSQL, but its driver psycopg is not installed: "
            f"install the postgres extra ({POSTGRES_EXTRA})"
        )
    asks = (
        f"postgresql+{driver}://... needs the {module} driver,"
        if driver
        else f"postgresql://... means SQLAlchemy's default driver, {module},"
    )
    return (
        f"DATABASE_URL {asks} which is not installed: write postgresql+psycopg://... "
        f"and install the postgres extra ({POSTGRES_EXTRA})"
    )


def _flag(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{var} must be on or off (1/0, true/false), not {raw!r}")


def parse_duration(var: str, raw: str) -> timedelta:
    """A duration written as a whole number and a unit: "30m", "24h", "7d"; "0" is none."""
    value = raw.strip().lower()
    if value == "0":
        return timedelta(0)
    number, unit = value[:-1].strip(), value[-1:]
    if unit not in DURATION_UNITS or not number.isdigit():
        raise SettingsError(
            f"{var} must be a duration such as 30m, 24h or 7d (0 for none), not {raw!r}"
        )
    return int(number) * DURATION_UNITS[unit]


def _language(raw: str) -> str:
    """A supported language from a tag as Accept-Language would send it: `fr-FR` is `fr`."""
    tag = LANGUAGE_TAG.fullmatch(raw.strip().lower())
    if tag is None or tag.group(1) not in SUPPORTED_LANGUAGES:
        raise SettingsError(
            f"CDS_DEFAULT_LANGUAGE must be one of {', '.join(SUPPORTED_LANGUAGES)} "
            f"(or a tag such as fr-FR), not {raw!r}"
        )
    return tag.group(1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of the service."""

    database_url: str = "sqlite:///var/calcinosis-cds.sqlite3"
    default_language: str = "en"
    max_body_bytes: int = 5 * 1024 * 1024
    max_json_depth: int = 64  # FHIR resources in a CDS Hooks request nest far less deeply
    cors_origins: tuple[str, ...] = ("*",)
    cards_dir: Path = DEFAULT_CARDS_DIR
    log_level: str = "INFO"
    # Log lines: "json" (one JSON object per line, for log collectors) or "text" (for humans).
    log_format: str = "json"
    # Prometheus metrics at GET /metrics (public like /healthz: restrict it at the proxy).
    metrics: bool = True
    # FHIR servers this service may query when prefetch is missing (base URLs; none by default).
    fhir_servers: tuple[str, ...] = ()
    fhir_timeout_ms: int = 800
    fhir_deadline_ms: int = 1200
    fhir_page_limit: int = 10
    # The most one query (all its pages) and one call (all its queries) read from the FHIR
    # server, counted after decompression.
    fhir_max_query_bytes: int = 8 * 1024 * 1024
    fhir_max_call_bytes: int = 16 * 1024 * 1024
    # The longest a call waits for the store (then it goes on without it), how long a store
    # that failed is left alone, and how many issued cards are kept for it meanwhile.
    store_deadline_ms: int = 500
    store_retry_seconds: int = 5
    issued_buffer: int = 10_000
    # The longest a client may take to send a request once a worker thread has taken it (then
    # the request is cut: 408); see cds_service/serving.py.
    client_timeout_seconds: int = 10
    # Key of the HMACs that stand for patients in the store; set your own in production.
    hash_key: str = field(default=DEVELOPMENT_HASH_KEY, repr=False)
    repeat_window_minutes: int = 60  # order-select caution not repeated at order-sign
    # The calcinosis risk-screening card is shown at most once per patient in this many days
    # (0: at every chart opening); see docs/knowledge.md, "Card set".
    risk_screening_interval_days: int = 365
    # An interaction caution between two drugs already active, not critical, is shown at
    # patient-view once, then only when its evidence changes (off: at every chart opening).
    quiet_standing_interactions: bool = True
    # A patient-view card overridden with a reason is not shown again for this long, by
    # indicator, unless its evidence changes (0: not snoozed).
    snooze_critical: timedelta = timedelta(hours=24)
    snooze_warning: timedelta = timedelta(days=7)
    snooze_info: timedelta = timedelta(days=30)
    # Overridden without a reason (a plain "Dismiss"): shorter, never longer than with one.
    snooze_no_reason_critical: timedelta = timedelta(hours=1)
    snooze_no_reason_warning: timedelta = timedelta(days=1)
    snooze_no_reason_info: timedelta = timedelta(days=7)
    # Indicators whose snooze also ends when the chart is opened in another encounter.
    snooze_encounter_bound: tuple[str, ...] = ("critical",)
    # Schema migrations: a worker that finds the store behind migrates it (off: it reports
    # itself not ready until `calcinosis-cds migrate` has run).
    auto_migrate: bool = True
    # Retention (0: kept for ever). Issued cards: feedback and the risk screening's interval
    # read them back (cards of a rule with an interval are kept at least that long anyway).
    retain_issued: timedelta = timedelta(days=400)
    # Feedback: what knowledge maintainers review, across knowledge versions; a few rows a day.
    retain_feedback: timedelta = timedelta(days=3650)
    # Cautions shown (kept at least CDS_REPEAT_WINDOW_MINUTES): an unchanged standing
    # interaction is shown again once its caution is pruned.
    retain_cautions: timedelta = timedelta(days=90)
    # Snoozes, counted from when they end (an ended snooze hides nothing).
    retain_snoozes: timedelta = timedelta(days=30)
    # How often each worker prunes (0: only `calcinosis-cds prune`).
    prune_interval: timedelta = timedelta(hours=1)
    # Authentication of CDS clients: "off" (development only) or "jwt" (CDS Hooks 2.0).
    auth: str = "off"
    trusted_issuers_file: Path | None = None  # JSON file, see the README, "Security"
    public_base_url: str | None = None  # the URL clients call, for the JWT `aud` check
    # JWT algorithms accepted; others are opt-in here ("none" and HS* are always refused).
    jwt_algorithms: tuple[str, ...] = ("ES384", "RS384")
    # The card preview page at "/" (a developer tool): on unless production mode is on.
    preview: bool | None = None
    # Synthetic fixture patients offered by the preview page (absent: none offered).
    fixtures_dir: Path = DEFAULT_FIXTURES_DIR
    # Production mode refuses to start with an unsafe configuration (see check_production).
    production: bool = False
    # Injected clock: the only source of "now" for staleness and ages (tests pin it).
    clock: Callable[[], datetime] = field(default=_utcnow, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_language", _language(self.default_language))
        for name, value in (
            ("CDS_MAX_BODY_BYTES", self.max_body_bytes),
            ("CDS_FHIR_MAX_QUERY_BYTES", self.fhir_max_query_bytes),
            ("CDS_FHIR_MAX_CALL_BYTES", self.fhir_max_call_bytes),
        ):
            if value < 1024:
                raise SettingsError(f"{name} must be at least 1024")
        if self.fhir_max_query_bytes > self.fhir_max_call_bytes:
            raise SettingsError(
                "CDS_FHIR_MAX_QUERY_BYTES must not be larger than CDS_FHIR_MAX_CALL_BYTES: "
                "a query is part of a call"
            )
        for name, value in (
            ("CDS_FHIR_TIMEOUT_MS", self.fhir_timeout_ms),
            ("CDS_FHIR_DEADLINE_MS", self.fhir_deadline_ms),
            ("CDS_FHIR_PAGE_LIMIT", self.fhir_page_limit),
            ("CDS_REPEAT_WINDOW_MINUTES", self.repeat_window_minutes),
            ("CDS_MAX_JSON_DEPTH", self.max_json_depth),
            ("CDS_STORE_DEADLINE_MS", self.store_deadline_ms),
            ("CDS_STORE_RETRY_SECONDS", self.store_retry_seconds),
            ("CDS_ISSUED_BUFFER", self.issued_buffer),
            ("CDS_CLIENT_TIMEOUT_SECONDS", self.client_timeout_seconds),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be a positive integer")
        if self.risk_screening_interval_days < 0:
            raise SettingsError("CDS_RISK_SCREENING_INTERVAL_DAYS must not be negative")
        self._check_snoozes()
        self._check_retention()
        for server in self.fhir_servers:
            if not server.startswith(("https://", "http://")):
                raise SettingsError(f"CDS_FHIR_SERVERS: {server!r} is not an http(s) base URL")
        level = self.log_level.strip().upper()
        if level not in LOG_LEVELS:
            raise SettingsError(
                f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )
        object.__setattr__(self, "log_level", level)
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"LOG_FORMAT must be json or text, not {self.log_format!r}")
        if self.auth not in ("off", "jwt"):
            raise SettingsError(f"CDS_AUTH must be 'off' or 'jwt', not {self.auth!r}")
        if self.auth == "jwt" and self.trusted_issuers_file is None:
            raise SettingsError("CDS_AUTH=jwt needs CDS_TRUSTED_ISSUERS (a JSON file of issuers)")
        if problem := database_url_problem(self.database_url):
            raise SettingsError(problem)
        if not self.cards_dir.is_dir():
            raise SettingsError(f"CDS_CARDS_DIR {str(self.cards_dir)!r} is not a directory")
        if self.preview is None:
            object.__setattr__(self, "preview", not self.production)
        if self.production:
            self.check_production()

    def _check_snoozes(self) -> None:
        for var, name in SNOOZE_SETTINGS:
            value: timedelta = getattr(self, name)
            if not timedelta(0) <= value <= MAX_SNOOZE:
                raise SettingsError(f"{var} must be between 0 and {MAX_SNOOZE.days}d")
        for indicator in SNOOZE_INDICATORS:
            explained = self.snooze_for(indicator, reason=True)
            if self.snooze_for(indicator, reason=False) > explained:
                raise SettingsError(
                    f"CDS_SNOOZE_NO_REASON_{indicator.upper()} must not be longer than "
                    f"CDS_SNOOZE_{indicator.upper()}: a card dismissed without a reason is "
                    "hidden no longer than one overridden with a reason"
                )
        unknown = set(self.snooze_encounter_bound) - set(SNOOZE_INDICATORS)
        if unknown:
            raise SettingsError(
                f"CDS_SNOOZE_ENDS_WITH_ENCOUNTER names {', '.join(sorted(unknown))}: "
                f"use {', '.join(SNOOZE_INDICATORS)} or none"
            )

    def _check_retention(self) -> None:
        for var, name in RETENTION_SETTINGS:
            value: timedelta = getattr(self, name)
            if value and value < MIN_RETENTION:
                raise SettingsError(f"{var} must be 0 (keep for ever) or at least 1h")
        if self.prune_interval < timedelta(0):
            raise SettingsError("CDS_PRUNE_INTERVAL must not be negative")

    def snooze_for(self, indicator: str, *, reason: bool) -> timedelta:
        """How long an overridden card of this indicator stays hidden (with or without a
        reason given); an indicator this service does not issue counts as critical."""
        level = indicator if indicator in SNOOZE_INDICATORS else "critical"
        prefix = "snooze_" if reason else "snooze_no_reason_"
        return getattr(self, f"{prefix}{level}")  # type: ignore[no-any-return]

    def check_production(self) -> None:
        """Refuse what must never run in production (raises SettingsError naming it)."""
        problems = []
        if self.auth != "jwt":
            problems.append("CDS_AUTH must be jwt")
        if not self.public_base_url or not self.public_base_url.startswith("https://"):
            problems.append("CDS_PUBLIC_BASE_URL must be the https URL clients call")
        if self.hash_key == DEVELOPMENT_HASH_KEY or len(self.hash_key) < 32:
            problems.append("CDS_HASH_KEY must be a secret of at least 32 characters")
        if any(not s.startswith("https://") for s in self.fhir_servers):
            problems.append("CDS_FHIR_SERVERS must all be https")
        if self.database_url.startswith("sqlite") and ":memory:" in self.database_url:
            problems.append("DATABASE_URL must be persistent")
        if self.preview:
            problems.append("CDS_PREVIEW must be off (the preview page is a developer tool)")
        if problems:
            raise SettingsError("production mode: " + "; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the README, "Settings")."""
        env = os.environ if env is None else env
        for old, new in REPLACED_SETTINGS.items():
            if old in env:
                raise SettingsError(f"{old} is no longer read: use {new} (see the README)")
        kwargs: dict[str, object] = {}
        if url := env.get("DATABASE_URL"):
            kwargs["database_url"] = url
        if lang := env.get("CDS_DEFAULT_LANGUAGE"):
            kwargs["default_language"] = lang
        for var, name in INTEGER_SETTINGS:
            if raw := env.get(var):
                try:
                    kwargs[name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{var} must be an integer, not {raw!r}") from None
        for var, name in SNOOZE_SETTINGS:
            if raw := env.get(var):
                kwargs[name] = parse_duration(var, raw)
        for var, name in (*RETENTION_SETTINGS, ("CDS_PRUNE_INTERVAL", "prune_interval")):
            if raw := env.get(var):
                kwargs[name] = parse_duration(var, raw)
        if migrate := env.get("CDS_AUTO_MIGRATE"):
            kwargs["auto_migrate"] = _flag("CDS_AUTO_MIGRATE", migrate)
        if (bound := env.get("CDS_SNOOZE_ENDS_WITH_ENCOUNTER")) is not None:
            names = tuple(b.strip().lower() for b in bound.split(",") if b.strip())
            kwargs["snooze_encounter_bound"] = () if names == ("none",) else names
        if key := env.get("CDS_HASH_KEY"):
            kwargs["hash_key"] = key
        if auth := env.get("CDS_AUTH"):
            kwargs["auth"] = auth.strip().lower()
        if issuers := env.get("CDS_TRUSTED_ISSUERS"):
            kwargs["trusted_issuers_file"] = Path(issuers)
        if algorithms := env.get("CDS_JWT_ALGORITHMS"):
            kwargs["jwt_algorithms"] = tuple(a.strip() for a in algorithms.split(",") if a.strip())
        if base := env.get("CDS_PUBLIC_BASE_URL"):
            kwargs["public_base_url"] = base.rstrip("/")
        if production := env.get("CDS_PRODUCTION"):
            kwargs["production"] = _flag("CDS_PRODUCTION", production)
        if servers := env.get("CDS_FHIR_SERVERS"):
            kwargs["fhir_servers"] = tuple(s.strip() for s in servers.split(",") if s.strip())
        if origins := env.get("CDS_CORS_ORIGINS"):
            kwargs["cors_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        if cards := env.get("CDS_CARDS_DIR"):
            kwargs["cards_dir"] = Path(cards)
        if fixtures := env.get("CDS_FIXTURES_DIR"):
            kwargs["fixtures_dir"] = Path(fixtures)
        if preview := env.get("CDS_PREVIEW"):
            kwargs["preview"] = _flag("CDS_PREVIEW", preview)
        if level := env.get("LOG_LEVEL"):
            kwargs["log_level"] = level  # normalised and checked in __post_init__
        if log_format := env.get("LOG_FORMAT"):
            kwargs["log_format"] = log_format.strip().lower()
        if metrics := env.get("CDS_METRICS"):
            kwargs["metrics"] = _flag("CDS_METRICS", metrics)
        if quiet := env.get("CDS_QUIET_STANDING_INTERACTIONS"):
            kwargs["quiet_standing_interactions"] = _flag("CDS_QUIET_STANDING_INTERACTIONS", quiet)
        return cls(**kwargs)  # type: ignore[arg-type]

    def now(self) -> datetime:
        """The current time, timezone-aware, from the injected clock."""
        return self.clock()
