"""What a hostile or slow FHIR server can cost (issue 15): a thread for no longer than the
deadline, whatever the server drips; memory for no more than the size caps, counted after
decompression; and nothing in a compression that was not asked for."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service.fhir import client as fhir_client
from cds_service.fhir.client import DEADLINE, FetchBudget, FetchResult, FhirFetcher
from cds_service.fhir.prefetch import FetchPolicy, resolve
from tests.conftest import SERVICE_URL, app_with, fhir_authorization
from tests.fhir.test_fhir_fetch import KEYS, REQUEST, ehr_routes
from tests.fhir_stub import Reply, StubFhirServer, bundle, fhir

TOKEN = "secret-access-token-77a2"
FHIR = {"Content-Type": "application/fhir+json"}
OBSERVATIONS = [{"resourceType": "Observation", "id": f"o{i}", "status": "final"} for i in range(3)]
BOMB_BYTES = 50 * 1000 * 1000


def fetcher(**settings: Any) -> FhirFetcher:
    return FhirFetcher(**{"timeout_s": 5.0, "deadline_s": 2.0, "page_limit": 3, **settings})


def fetch(routes: dict[str, Any], queries: dict[str, str], **settings: Any) -> FetchResult:
    """`queries` against a stub serving `routes`, with a fetcher closed afterwards."""
    f = fetcher(**settings)
    try:
        with StubFhirServer(routes) as stub:
            return f.fetch(stub.base_url, TOKEN, queries)
    finally:
        f.close()


def compress(data: bytes, coding: str) -> bytes:
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@functools.cache
def bomb(coding: str) -> bytes:
    """50 MB of spaces (valid JSON padding) compressed to some 50 kB, built a MB at a time."""
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b" " * 1_000_000
    return b"".join(packer.compress(block) for _ in range(BOMB_BYTES // len(block))) + (
        packer.flush()
    )


def content_encoding(coding: str) -> str:
    return "deflate" if coding == "raw-deflate" else coding


# --------------------------------------------------------------------------- the deadline


def drip_body(_path: str) -> Reply:
    """Headers at once, then a body of one byte every 0.2 s, for ever."""
    return Reply(itertools.chain([b"{"], itertools.repeat(b" ")), headers=FHIR, pause_s=0.2)


def drip_headers(_path: str) -> Reply:
    """A status line, then one endless header, one byte every 0.2 s."""
    head = [bytes([c]) for c in b"HTTP/1.0 200 OK\r\nX-Drip: "]
    return Reply(itertools.chain(head, itertools.repeat(b"a")), headers=None, pause_s=0.2)


@pytest.mark.parametrize("drip", [drip_body, drip_headers], ids=["body", "headers"])
def test_a_dripping_server_frees_the_threads_at_the_deadline(drip: Any) -> None:
    # Two threads, both taken by drips: the healthy query that follows gets one only if the
    # drips let go at their deadline (each read is timed on its own, and the drip never ends).
    f = fetcher(deadline_s=0.6, threads=2)
    routes = {"/fhir/Drip": drip, "/fhir/Observation": lambda _p: fhir(bundle(OBSERVATIONS))}
    try:
        with StubFhirServer(routes) as stub:
            dripped = f.fetch(stub.base_url, TOKEN, {"a": "Drip?n=1", "b": "Drip?n=2"})
            healthy = f.fetch(
                stub.base_url, TOKEN, {"c": "Observation?n=3"}, deadline=time.monotonic() + 5
            )
    finally:
        f.close()  # after the stub: a drip still being read would end with it
    assert dripped.failures == {"a": DEADLINE, "b": DEADLINE}
    assert healthy.failures == {}
    assert healthy.resources == {"c": OBSERVATIONS}


# --------------------------------------------------------------------------- the size caps


def test_an_announced_length_over_the_cap_fails_before_reading() -> None:
    # The body never comes: reading it would end at the deadline, not as too large.
    announced = Reply(
        itertools.repeat(b""), headers={**FHIR, "Content-Length": "50000000"}, pause_s=0.05
    )
    outcomes: list[str] = []
    result = fetch(
        {"/fhir/Big": lambda _p: announced},
        {"big": "Big?n=1"},
        observer=lambda _key, outcome, _s: outcomes.append(outcome),
    )
    assert result.failures == {
        "big": "the answer is larger than 8388608 bytes (CDS_FHIR_MAX_QUERY_BYTES)"
    }
    assert outcomes == ["too_large"]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
def test_an_answer_without_length_stops_at_the_cap(chunked: bool) -> None:
    chunks = itertools.repeat(b" " * 65536, BOMB_BYTES // 65536)  # 50 MB
    outcomes: list[str] = []
    f = fetcher(max_query_bytes=1_000_000, observer=lambda _k, o, _s: outcomes.append(o))
    try:
        with StubFhirServer({"/fhir/Big": lambda _p: Reply(chunks, FHIR, chunked=chunked)}) as stub:
            result = f.fetch(stub.base_url, TOKEN, {"big": "Big?n=1"})
            sent = stub.sent
    finally:
        f.close()
    assert result.failures == {
        "big": "the answer is larger than 1000000 bytes (CDS_FHIR_MAX_QUERY_BYTES)"
    }
    assert outcomes == ["too_large"]
    assert sent < BOMB_BYTES / 2  # the connection was closed, not drained


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_compression_bomb_is_never_inflated_past_the_cap(
    monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    inflated: list[int] = []
    pieces = fhir_client._Decoder.pieces

    def counted(self: Any, raw: bytes, size: int) -> Iterator[bytes]:
        for piece in pieces(self, raw, size):
            inflated.append(len(piece))
            yield piece

    monkeypatch.setattr(fhir_client._Decoder, "pieces", counted)
    body = bomb(coding)
    headers = {**FHIR, "Content-Encoding": content_encoding(coding)}
    result = fetch(
        {"/fhir/Bomb": lambda _p: Reply([body], {**headers, "Content-Length": str(len(body))})},
        {"bomb": "Bomb?n=1"},
    )
    assert "larger than 8388608 bytes" in result.failures["bomb"]
    assert sum(inflated) <= 8388608 + 65536  # one piece past the cap, then it stopped


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "raw-deflate"])
def test_a_compressed_answer_under_the_cap_is_read(coding: str) -> None:
    body = compress(json.dumps(bundle(OBSERVATIONS)).encode(), coding.removeprefix("x-"))
    headers = {**FHIR, "Content-Encoding": content_encoding(coding)}
    with StubFhirServer({"/fhir/Observation": lambda _p: Reply([body], headers)}) as stub:
        f = fetcher()
        try:
            result = f.fetch(stub.base_url, TOKEN, {"observations": "Observation?n=1"})
        finally:
            f.close()
    assert result.failures == {}
    assert result.resources == {"observations": OBSERVATIONS}
    assert stub.seen[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Content-Encoding": "br"}, "compressed as br, which was not asked for"),
        ({"Content-Encoding": "zstd"}, "compressed as zstd, which was not asked for"),
        ({"Content-Encoding": "gzip, gzip"}, "compressed more than once"),
        ({"Content-Encoding": "Bearer secret\x7f"}, "compressed as an unknown coding"),
        ({"Content-Encoding": "gzip"}, "the gzip answer is corrupt"),
    ],
    ids=["br", "zstd", "twice", "garbage", "not-gzip"],
)
def test_an_encoding_not_asked_for_is_refused(headers: dict[str, str], reason: str) -> None:
    body = json.dumps(bundle(OBSERVATIONS)).encode()
    result = fetch(
        {"/fhir/Observation": lambda _p: Reply([body], {**FHIR, **headers})},
        {"observations": "Observation?n=1"},
    )
    assert reason in result.failures["observations"]


def test_a_cut_short_gzip_answer_fails() -> None:
    body = compress(json.dumps(bundle(OBSERVATIONS)).encode(), "gzip")[:-12]
    headers = {**FHIR, "Content-Encoding": "gzip"}
    result = fetch(
        {"/fhir/Observation": lambda _p: Reply([body], headers)},
        {"observations": "Observation?n=1"},
    )
    assert result.failures == {"observations": "the gzip answer is cut short"}


def padded(size: int) -> bytes:
    """A Bundle of OBSERVATIONS padded with spaces to `size` bytes."""
    body = json.dumps(bundle(OBSERVATIONS)).encode()
    return body + b" " * (size - len(body))


def test_the_queries_of_a_call_share_one_budget() -> None:
    # Four answers of 300 kB, each under the 500 kB query cap, 1.2 MB together: over 1 MB.
    routes = {"/fhir/Observation": lambda _p: fhir_raw(padded(300_000))}
    queries = {f"k{i}": f"Observation?n={i}" for i in range(4)}
    result = fetch(routes, queries, max_query_bytes=500_000, max_call_bytes=1_000_000)
    # Read side by side: three or fewer are read whole, the others are cut short.
    assert len(result.resources) <= 3
    assert len(result.resources) + len(result.failures) == 4
    assert set(result.failures.values()) == {
        "the answers to this call are larger than 1000000 bytes together (CDS_FHIR_MAX_CALL_BYTES)"
    }


def test_the_pages_of_a_query_share_its_cap() -> None:
    # Three pages of 300 kB: under the 500 kB query cap one by one, not together.
    def page(path: str) -> tuple[int, str, bytes]:
        n = int(path.rsplit("=", 1)[1])
        body = bundle(OBSERVATIONS, f"{base}/Observation?page={n + 1}")
        return fhir_raw(json.dumps(body).encode() + b" " * 300_000)

    with StubFhirServer({"/fhir/Observation": page}) as stub:
        base = stub.base_url
        f = fetcher(max_query_bytes=500_000)
        try:
            result = f.fetch(base, TOKEN, {"observations": "Observation?page=1"})
        finally:
            f.close()
    assert "larger than 500000 bytes" in result.failures["observations"]
    assert len(stub.seen) == 2


def test_a_budget_passed_on_is_shared_by_later_fetches() -> None:
    routes = {"/fhir/Observation": lambda _p: fhir_raw(padded(300_000))}
    f = fetcher(max_query_bytes=500_000, max_call_bytes=500_000)
    try:
        with StubFhirServer(routes) as stub:
            budget = f.budget()
            first = f.fetch(stub.base_url, TOKEN, {"a": "Observation?n=1"}, budget=budget)
            second = f.fetch(stub.base_url, TOKEN, {"b": "Observation?n=2"}, budget=budget)
            fresh = f.fetch(stub.base_url, TOKEN, {"c": "Observation?n=3"})
    finally:
        f.close()
    assert (first.failures, list(second.failures), fresh.failures) == ({}, ["b"], {})


def fhir_raw(body: bytes) -> tuple[int, str, bytes]:
    return 200, "application/fhir+json", body


def test_every_fetch_of_a_hook_call_gets_the_same_deadline_and_budget() -> None:
    calls: list[tuple[float | None, FetchBudget | None]] = []

    class Recording(FhirFetcher):
        def fetch(  # type: ignore[override]
            self, _base: str, _token: Any, _queries: Any, deadline: Any, budget: Any
        ) -> FetchResult:
            calls.append((deadline, budget))
            return FetchResult()

    server = "https://ehr.example.org/fhir"
    body = copy.deepcopy(REQUEST)
    body.pop("fhirAuthorization", None)
    body["fhirServer"] = server
    del body["prefetch"]["conditions"]  # fetched, then the observations' next page
    body["prefetch"]["observations"]["link"] = [
        {"relation": "next", "url": f"{server}/Observation?page=2"}
    ]
    templates = {"conditions": "Condition?patient={{context.patientId}}", "observations": ""}
    resolve(templates, body, FetchPolicy(Recording(1.0, 1.0, 3), (server,)))
    assert len(calls) == 2
    assert calls[0][0] is not None
    assert calls[0][0] == calls[1][0]
    assert isinstance(calls[0][1], FetchBudget)
    assert calls[0][1] is calls[1][1]


# --------------------------------------------------------------------------- through the app


def test_a_too_large_answer_is_412_and_counted(tmp_path: Path) -> None:
    routes = {**ehr_routes(), "/fhir/Observation?": lambda _p: fhir_raw(padded(5000))}
    with StubFhirServer(routes) as stub:
        body = copy.deepcopy(REQUEST)
        for key in KEYS:
            body["prefetch"].pop(key)
        body["fhirServer"] = stub.base_url
        body["fhirAuthorization"] = fhir_authorization(TOKEN)
        limits = {"fhir_max_query_bytes": 4096, "fhir_max_call_bytes": 1_000_000}
        with app_with(tmp_path, fhir_servers=(stub.base_url,), **limits) as app:
            client = app.test_client()
            response = client.post(SERVICE_URL, json=body)
            metrics = client.get("/metrics").get_data(as_text=True)
    assert response.status_code == 412
    issue = response.json["issue"][0]
    assert issue["expression"] == ["prefetch.observations"]
    assert "larger than 4096 bytes" in issue["diagnostics"]
    assert 'cds_fhir_fetch_total{key="observations",outcome="too_large"} 1.0' in metrics
