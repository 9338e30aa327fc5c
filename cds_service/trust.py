"""Authentication of CDS Clients by the signed JWT they present (CDS Hooks 2.0, "Trusting CDS
Clients" and "JWT Signing Algorithm").

Every call to the service carries ``Authorization: Bearer <JWT>``. The JWT is signed by the
CDS Client with an asymmetric key (ES384 or RS384 recommended; ``none`` and every symmetric
algorithm are refused whatever the configuration says). The service trusts only the issuers
(``iss``) it is configured with, fetches their public keys only from the URLs configured for
them (``jwks_url``, or a ``jku`` on that issuer's allowlist) or uses a JWK Set exchanged out of
band (first, even when the token names a ``jku``: nothing is downloaded for a kid it holds), and
refuses a token whose ``jti`` it has already seen.

No Flask here: `JwtVerifier.verify` takes the header value and the expected audience (the URL
of the endpoint being called) and returns a `VerifiedClient` or raises `AuthError`. The
reason an `AuthError` carries is for the logs only, never for the caller (answer a bare 401),
and never contains the token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from cds_service.urls import is_allowed

log = logging.getLogger(__name__)

DEFAULT_ALGORITHMS = ("ES384", "RS384")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
JWKS_TIMEOUT_S = 2.0
JWKS_MAX_BYTES = 256 * 1024
MAX_TOKEN_CHARS = 8192
# Three base64url segments: anything else is refused before it reaches the JWT library.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ISSUER_FIELDS = frozenset(
    {"iss", "jwks_url", "jwks_file", "jwks", "allowed_jku", "fhir_servers", "tenant"}
)

JwkSet = dict[str, Any]
ReplayGuard = Callable[[str, str, datetime], bool]
"""``replay(iss, jti, remember_until)``: True when the jti is new (it is then remembered until
``remember_until``), False when it was already seen."""


class AuthError(Exception):
    """The caller is not authenticated. `reason` is short, for the logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _forbidden_algorithm(alg: str) -> bool:
    """`none` and the symmetric (shared-secret) algorithms are never acceptable."""
    return alg.lower() == "none" or alg.upper().startswith("HS")


def check_key_url(url: str, what: str = "URL") -> None:
    """Keys are fetched over https only (plain http to a loopback host is let through, for
    tests and local development). Raises ValueError."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{what} {url!r} has no host")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return
    raise ValueError(f"{what} {url!r} must use https")


def _check_jwks(jwks: Any, where: str) -> JwkSet:
    """A JWK Set of public keys, each with a kid. Raises ValueError."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError(f"{where}: a JWK Set must be an object with a 'keys' array")
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise ValueError(f"{where}: keys[{i}] must be an object with a string 'kid'")
        if "d" in key or key.get("kty") == "oct":
            raise ValueError(f"{where}: keys[{i}] ({key['kid']}) is private or symmetric key")
    return jwks


def _keys_by_kid(jwks: JwkSet) -> dict[str, dict[str, Any]]:
    """Signature keys of a JWK Set by kid (first one wins; symmetric, private and
    non-signature keys are left out)."""
    found: dict[str, dict[str, Any]] = {}
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            continue
        if key.get("kty") == "oct" or "d" in key or key.get("use", "sig") != "sig":
            continue
        found.setdefault(key["kid"], key)
    return found


@dataclass(frozen=True)
class TrustedIssuer:
    """A CDS Client (or the identity provider issuing its tokens) this service trusts."""

    iss: str
    jwks_url: str | None = None  # where its JWK Set is published (used when no jku is sent)
    jwks: dict[str, Any] | None = field(default=None, hash=False)  # a JWK Set given out of band
    allowed_jku: tuple[str, ...] = ()  # jku header values accepted from this issuer
    fhir_servers: tuple[str, ...] = ()  # FHIR servers its requests may name (fhirServer)
    tenant: str | None = None  # when set, the token's `tenant` claim must equal it

    def __post_init__(self) -> None:
        if not self.iss:
            raise ValueError("an issuer needs an 'iss'")
        if self.jwks_url is None and self.jwks is None:
            raise ValueError(f"issuer {self.iss!r} needs a jwks_url or a static JWK Set")
        if self.jwks_url is not None:
            check_key_url(self.jwks_url, "jwks_url")
        for url in self.allowed_jku:
            check_key_url(url, "allowed_jku entry")
        if self.jwks is not None:
            _check_jwks(self.jwks, f"issuer {self.iss!r} jwks")

    def allows_fhir_server(self, url: str) -> bool:
        """Whether a request from this issuer may name `url` as its fhirServer: one of its
        fhir_servers or below one (`cds_service.urls.is_allowed`, as for CDS_FHIR_SERVERS)."""
        return is_allowed(url, self.fhir_servers)


@dataclass(frozen=True)
class VerifiedClient:
    """Who called, once the JWT is verified (all of it may be logged)."""

    iss: str
    sub: str | None
    jti: str
    tenant: str | None
    issuer: TrustedIssuer


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be an array of strings")
    return tuple(value)


def load_issuers(path: Path) -> dict[str, TrustedIssuer]:
    """Read the trusted issuers from a JSON file::

        {"issuers": [{"iss": "https://ehr.example.org",
                      "jwks_url": "https://ehr.example.org/jwks.json",
                      "jwks_file": "ehr-jwks.json", "jwks": {"keys": [...]},
                      "allowed_jku": ["https://ehr.example.org/jwks.json"],
                      "fhir_servers": ["https://ehr.example.org/fhir"],
                      "tenant": "..."}]}

    `jwks_file` is relative to the issuers file's folder. Raises ValueError naming the problem.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the trusted issuers file ({exc.strerror})") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    entries = document.get("issuers") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected an object with a non-empty 'issuers' array")
    issuers: dict[str, TrustedIssuer] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: issuers[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        unknown = sorted(set(entry) - _ISSUER_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        iss = entry.get("iss")
        if not isinstance(iss, str) or not iss:
            raise ValueError(f"{where}: 'iss' must be a non-empty string")
        where = f"{where} ({iss})"
        if iss in issuers:
            raise ValueError(f"{where}: duplicate iss")
        for name in ("jwks_url", "tenant", "jwks_file"):
            if name in entry and (not isinstance(entry[name], str) or not entry[name]):
                raise ValueError(f"{where}: '{name}' must be a non-empty string")
        if "jwks" in entry and "jwks_file" in entry:
            raise ValueError(f"{where}: give 'jwks' or 'jwks_file', not both")
        jwks = entry.get("jwks")
        if "jwks_file" in entry:
            jwks_path = path.parent / entry["jwks_file"]
            try:
                jwks = json.loads(jwks_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{where}: cannot load jwks_file {jwks_path}: {exc}") from exc
        try:
            issuers[iss] = TrustedIssuer(
                iss=iss,
                jwks_url=entry.get("jwks_url"),
                jwks=jwks,
                allowed_jku=_string_list(entry.get("allowed_jku"), "'allowed_jku'"),
                fhir_servers=_string_list(entry.get("fhir_servers"), "'fhir_servers'"),
                tenant=entry.get("tenant"),
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
    return issuers


def fetch_jwks_https(url: str) -> JwkSet:
    """GET a JWK Set (https only, except loopback; 2 s timeout; no redirects; 256 KiB max)."""
    check_key_url(url, "JWK Set URL")
    with (
        httpx.Client(timeout=JWKS_TIMEOUT_S, follow_redirects=False) as client,
        client.stream("GET", url, headers={"Accept": "application/json"}) as response,
    ):
        response.raise_for_status()
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError(f"JWK Set at {url} is larger than {JWKS_MAX_BYTES} bytes")
    return json.loads(body)


def _number(payload: Mapping[str, Any], claim: str) -> float:
    value = payload.get(claim)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"{claim} not a number")
    return float(value)


class JwtVerifier:
    """Verifies the Bearer JWT of each request against the trusted issuers.

    JWK Sets fetched from URLs are cached per URL. A kid missing from the cached set causes
    one refetch, at most once per `refresh_interval_s` per URL (so a flood of made-up kids
    costs one request a minute to the key server); a set older than `cache_ttl_s` is refetched
    on its next use so removed keys stop working (if that fetch fails, the old set is kept).
    Thread-safe.
    """

    def __init__(
        self,
        issuers: Mapping[str, TrustedIssuer],
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway_s: int = 60,
        max_lifetime_s: int | None = 3600,
        replay: ReplayGuard,
        fetch_jwks: Callable[[str], JwkSet] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        refresh_interval_s: int = 60,
        cache_ttl_s: int = 3600,
    ) -> None:
        self.issuers = dict(issuers)
        self.algorithms = frozenset(a for a in algorithms if not _forbidden_algorithm(a))
        if not self.algorithms:
            raise ValueError("no acceptable (asymmetric) JWT algorithm configured")
        self.leeway = timedelta(seconds=leeway_s)
        self.max_lifetime_s = max_lifetime_s
        self.replay = replay
        self.fetch_jwks = fetch_jwks or fetch_jwks_https
        self.clock = clock
        self.refresh_interval = timedelta(seconds=refresh_interval_s)
        self.cache_ttl = timedelta(seconds=cache_ttl_s)
        self._static = {
            iss: _keys_by_kid(issuer.jwks)
            for iss, issuer in self.issuers.items()
            if issuer.jwks is not None
        }
        self._cache: dict[str, tuple[datetime, dict[str, dict[str, Any]]]] = {}
        self._fetched_at: dict[str, datetime] = {}  # last attempt per URL, success or not
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ keys

    def _fetch(self, url: str, now: datetime) -> dict[str, dict[str, Any]] | None:
        """Fetch and cache `url` unless it was tried less than refresh_interval ago."""
        last = self._fetched_at.get(url)
        if last is not None and now - last < self.refresh_interval:
            return None
        self._fetched_at[url] = now
        try:
            keys = _keys_by_kid(self.fetch_jwks(url))
        except Exception as exc:  # noqa: BLE001 - any failure: no keys from there this time
            log.warning("JWK Set fetch from %s failed: %s", url, type(exc).__name__)
            return None
        self._cache[url] = (now, keys)
        return keys

    def _key_from_url(self, url: str, kid: str) -> dict[str, Any] | None:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(url)
            if cached is None or now - cached[0] >= self.cache_ttl:
                keys = self._fetch(url, now)
                if keys is None and cached is None:
                    raise AuthError("jwks unavailable")
                cached = self._cache[url]
            if kid in cached[1]:
                return cached[1][kid]
            refreshed = self._fetch(url, now)
            return refreshed.get(kid) if refreshed is not None else None

    def _signing_key(self, issuer: TrustedIssuer, header: Mapping[str, Any]) -> jwt.PyJWK:
        kid, alg, jku = header["kid"], header["alg"], header.get("jku")
        if jku is not None and (not isinstance(jku, str) or jku not in issuer.allowed_jku):
            raise AuthError("jku not allowed")
        # A JWK Set given out of band comes first, with or without a jku: a client that always
        # names its key URL (the CDS Hooks Sandbox does) then works offline. Only a kid the
        # static set lacks is looked up at the (allowed) jku, or else at the jwks_url.
        jwk = self._static.get(issuer.iss, {}).get(kid)
        if jwk is None and jku is not None:
            jwk = self._key_from_url(jku, kid)
        elif jwk is None and issuer.jwks_url is not None:
            jwk = self._key_from_url(issuer.jwks_url, kid)
        if jwk is None:
            raise AuthError("unknown kid")
        if "alg" in jwk and jwk["alg"] != alg:
            raise AuthError("alg does not match key")
        try:
            return jwt.PyJWK(jwk, algorithm=alg)  # refuses a key of another type or curve
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:  # also a malformed JWK
            raise AuthError("key unusable for alg") from exc

    # ------------------------------------------------------------------ verification

    def verify(self, authorization_header: str | None, audience: str) -> VerifiedClient:
        """Verify the `Authorization` header of a call to the endpoint whose URL is
        `audience`. Returns the client or raises AuthError."""
        token = self._bearer_token(authorization_header)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or _forbidden_algorithm(alg) or alg not in self.algorithms:
            raise AuthError("alg not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthError("typ not JWT")
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise AuthError("missing kid")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("untrusted iss")

        key = self._signing_key(issuer, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer.iss,
                options={
                    "require": ["exp", "iat", "aud", "iss", "jti"],
                    # Times are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"missing {exc.claim}") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("aud mismatch") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("iss mismatch") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("bad signature") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from exc

        remember_until = self._check_times(claims)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti not a string")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthError("tenant not a string")
        if issuer.tenant is not None and tenant != issuer.tenant:
            raise AuthError("tenant mismatch")
        if not self.replay(issuer.iss, jti, remember_until):
            raise AuthError("replayed jti")
        sub = claims.get("sub")
        return VerifiedClient(
            iss=issuer.iss,
            sub=sub if isinstance(sub, str) else None,
            jti=jti,
            tenant=tenant,
            issuer=issuer,
        )

    @staticmethod
    def _bearer_token(authorization_header: str | None) -> str:
        if not authorization_header:
            raise AuthError("no Authorization header")
        scheme, _, token = authorization_header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("not a Bearer token")
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
            raise AuthError("malformed token")
        return token

    def _check_times(self, claims: Mapping[str, Any]) -> datetime:
        """exp not past, iat (and nbf) not in the future, each with the leeway; a lifetime no
        longer than max_lifetime_s. Returns until when the jti must be remembered."""
        now = self.clock()
        try:
            exp = datetime.fromtimestamp(_number(claims, "exp"), UTC)
            iat = datetime.fromtimestamp(_number(claims, "iat"), UTC)
            nbf = datetime.fromtimestamp(_number(claims, "nbf"), UTC) if "nbf" in claims else None
        except (OverflowError, OSError, ValueError) as exc:
            raise AuthError("time claim out of range") from exc
        if exp <= now - self.leeway:
            raise AuthError("expired")
        if iat > now + self.leeway:
            raise AuthError("iat in the future")
        if nbf is not None and nbf > now + self.leeway:
            raise AuthError("not yet valid")
        if self.max_lifetime_s is not None and (exp - iat).total_seconds() > self.max_lifetime_s:
            raise AuthError("lifetime too long")
        # The token stays acceptable until exp + leeway.
        return exp + min(self.leeway, datetime.max.replace(tzinfo=UTC) - exp)
