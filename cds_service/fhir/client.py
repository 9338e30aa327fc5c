"""Fetching prefetch queries from the EHR's FHIR server when the EHR did not send them.

- Independent queries run concurrently (one thread each, from a pool kept for the process).
- Each HTTP request has a timeout, and the whole fetch one deadline; what is not back by the
  deadline has failed.
- Bundle ``next`` links are followed up to a page limit, and only while they stay on the same
  FHIR server (at or below its base URL, `cds_service.urls.is_within`): the access token is
  never sent anywhere else.
- Every failure becomes a short reason ("HTTP 401", "timed out", "not FHIR JSON") and an
  outcome from a fixed list (for metrics). Reasons and logs never contain the access token,
  and never the URL (it carries the patient id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import httpx

from cds_service.urls import is_within

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class _NoRequestUrls(logging.Filter):
    """httpx logs every request URL ("HTTP Request: GET <url> ..."); FHIR query URLs carry the
    patient id. A filter on the logger itself holds whatever level a deployment sets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request")


logging.getLogger("httpx").addFilter(_NoRequestUrls())


class FetchError(Exception):
    """One query could not be answered; `reason` is safe to show and to log; `outcome` is one
    of http_error, timeout, deadline, connection_error, invalid_response."""

    def __init__(self, reason: str, outcome: str = "invalid_response") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome


DEADLINE = "no answer before the deadline"

# Told of every query: (prefetch key, outcome, seconds until answered or given up); it must
# not raise (Metrics.fetched never does).
QueryObserver = Callable[[str, str, float], None]


@dataclass
class _Answer:
    """What one query came to, in its thread, and how long that took."""

    seconds: float
    resources: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    error: FetchError | None = None


@dataclass
class FetchResult:
    """What came back for each key, and why the others failed."""

    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)


class FhirFetcher:
    """A FHIR REST client for prefetch queries, shared by all requests of a worker."""

    def __init__(
        self,
        timeout_s: float,
        deadline_s: float,
        page_limit: int,
        observer: QueryObserver | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.page_limit = page_limit
        self.observer = observer
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None  # created on the first fetch
        self._pool: ThreadPoolExecutor | None = None

    def _open(self) -> tuple[httpx.Client, ThreadPoolExecutor]:
        with self._lock:
            if self._client is None or self._pool is None:
                self._client = httpx.Client(
                    headers={"Accept": FHIR_JSON}, follow_redirects=False, timeout=self.timeout_s
                )
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fhir-fetch")
            return self._client, self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self._client is not None:
                self._client.close()
            self._client, self._pool = None, None

    def deadline(self) -> float:
        """The monotonic time by which a call's fetches must all be answered."""
        return time.monotonic() + self.deadline_s

    def fetch(
        self,
        base_url: str,
        token: str | None,
        queries: Mapping[str, str],
        deadline: float | None = None,
    ) -> FetchResult:
        """Run `queries` (key -> URL relative to `base_url`, or an absolute URL below it, such
        as a Bundle's next link) against `base_url` concurrently, all within `deadline` (by
        default one deadline from now). A key's metrics label is the part before any "#"."""
        client, pool = self._open()
        started = time.monotonic()
        deadline = deadline if deadline is not None else started + self.deadline_s
        base = base_url.rstrip("/") + "/"
        futures = {
            key: pool.submit(self._timed_query, client, base, token, query, deadline)
            for key, query in queries.items()
        }
        result = FetchResult()
        outcomes: dict[str, str] = {}
        for key, future in futures.items():
            try:
                answer = future.result(timeout=max(0.0, deadline - time.monotonic()) + 0.05)
            except FutureTimeout:
                future.cancel()
                answer = _Answer(time.monotonic() - started, error=FetchError(DEADLINE, "deadline"))
            if answer.error is not None:
                result.failures[key] = answer.error.reason
                outcomes[key] = answer.error.outcome
            else:
                result.resources[key] = answer.resources
                outcomes[key] = "ok"
                if answer.truncated:
                    result.truncated.append(key)
            if self.observer is not None:
                self.observer(key.split("#")[0], outcomes[key], answer.seconds)
        for key, reason in result.failures.items():
            label = key.split("#")[0]  # never an id: "medication#3", not the Medication id
            log.warning(
                "FHIR fetch failed: key=%s reason=%s",
                label,
                reason,
                extra={"key": label, "outcome": outcomes[key]},
            )
        for key in result.truncated:
            log.warning(
                "FHIR fetch stopped at %d pages: key=%s", self.page_limit, key, extra={"key": key}
            )
        return result

    def _timed_query(
        self, client: httpx.Client, base: str, token: str | None, query: str, deadline: float
    ) -> _Answer:
        started = time.monotonic()
        try:
            resources, truncated = self._fetch_query(client, base, token, query, deadline)
        except FetchError as exc:
            return _Answer(time.monotonic() - started, error=exc)
        return _Answer(time.monotonic() - started, resources, truncated)

    def _fetch_query(
        self, client: httpx.Client, base: str, token: str | None, query: str, deadline: float
    ) -> tuple[list[dict[str, Any]], bool]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        absolute = query.startswith(("http://", "https://"))
        url: str | None = query if absolute else base + query.lstrip("/")
        if not is_within(url, base, query=True):
            where = "a next link" if absolute else "a query"
            raise FetchError(f"{where} points outside the FHIR server")
        resources: list[dict[str, Any]] = []
        for _page in range(self.page_limit):
            assert url is not None
            body = self._get_json(client, url, headers, deadline)
            kind = body.get("resourceType")
            if kind == "OperationOutcome":
                raise FetchError("the FHIR server answered with an OperationOutcome")
            if kind != "Bundle":
                return [body], False
            entries = body.get("entry") or []
            if not isinstance(entries, list):
                raise FetchError("Bundle.entry is not an array")
            for entry in entries:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") not in (
                    None,
                    "OperationOutcome",
                ):
                    resources.append(resource)
            url = next_link(body)
            if url is None:
                return resources, False
            if not is_within(url, base, query=True):
                raise FetchError("a next link points outside the FHIR server")
        return resources, True

    def _get_json(
        self, client: httpx.Client, url: str, headers: dict[str, str], deadline: float
    ) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(DEADLINE, "deadline")
        timeout = min(self.timeout_s, remaining)
        try:
            response = client.get(url, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            if timeout < self.timeout_s:  # cut short by the deadline
                raise FetchError(DEADLINE, "deadline") from None
            raise FetchError("timed out", "timeout") from None
        except httpx.HTTPError as exc:
            raise FetchError(
                f"connection failed ({type(exc).__name__})", "connection_error"
            ) from None
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code}", "http_error")
        try:
            body = response.json()
        except ValueError:
            raise FetchError("the answer is not FHIR JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FetchError("the answer is not a FHIR resource")
        return body


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """The URL of a Bundle's `next` link, if it has one."""
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None
