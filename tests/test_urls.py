"""One answer to "is this fhirServer allowed?" (cds_service/urls.py), for the deployment's
CDS_FHIR_SERVERS, an issuer's fhir_servers and the pages the FHIR client follows."""

from __future__ import annotations

import pytest

from cds_service.fhir.client import FhirFetcher
from cds_service.fhir.prefetch import FetchPolicy
from cds_service.trust import TrustedIssuer
from cds_service.urls import is_allowed, is_within

ALLOWED = "http://allowed/ok"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        # exact, and a trailing slash on either side
        ("http://allowed/ok", True),
        ("http://allowed/ok/", True),
        # below, on a "/" boundary only
        ("http://allowed/ok/tenant-a", True),
        ("http://allowed/ok/tenant-a/fhir/", True),
        ("http://allowed/okay", False),
        ("http://allowed/ok-test", False),
        ("http://allowed/", False),
        ("http://allowed", False),
        # dot segments resolved before comparing, encoded ones too
        ("http://allowed/ok/../elsewhere", False),
        ("http://allowed/ok/./tenant", True),
        ("http://allowed/other/../ok/tenant", True),
        ("http://allowed/ok/%2e%2e/elsewhere", False),
        ("http://allowed/ok/%2E%2E", False),
        ("http://allowed/ok/..", False),
        ("http://allowed/%6Fk", True),  # %6F is "o"
        # host and scheme in any case, the default port written or not
        ("HTTP://Allowed/ok", True),
        ("http://ALLOWED./ok", True),
        ("http://allowed:80/ok", True),
        ("http://allowed:8080/ok", False),
        ("https://allowed/ok", False),
        ("https://allowed:80/ok", False),
        # the path keeps its case
        ("http://allowed/OK", False),
        # other hosts, however they are spelled
        ("http://allowed.evil/ok", False),
        ("http://evil/ok", False),
        ("http://allowed@evil/ok", False),
        ("http://evil@allowed/ok", False),
        ("http://allowed\\@evil/ok", False),
        # what a FHIR base URL never carries, and what cannot be read as one
        ("http://allowed/ok?x=1", False),
        ("http://allowed/ok#x", False),
        ("http://allowed/ok/%2F..%2Felsewhere", False),
        ("http://allowed/ok/ x", False),
        ("http://allowed:99999/ok", False),
        ("ftp://allowed/ok", False),
        ("/ok", False),
        ("", False),
    ],
)
def test_an_allowed_entry_allows_its_path_and_below(url: str, allowed: bool) -> None:
    assert is_allowed(url, [ALLOWED]) is allowed
    assert FetchPolicy(None, (ALLOWED,)).permits(url) is allowed
    issuer = TrustedIssuer(iss="https://ehr", jwks={"keys": []}, fhir_servers=(ALLOWED,))
    assert issuer.allows_fhir_server(url) is allowed


@pytest.mark.parametrize(
    ("entry", "allowed"),
    [
        ("http://allowed/ok/", True),
        ("HTTP://ALLOWED:80/ok", True),
        ("http://allowed/ok/tenant/..", True),
        ("http://allowed", True),  # the whole host
        ("http://allowed/ok/tenant", False),
        ("http://allowed/ok?x=1", False),  # an entry with a query allows nothing
    ],
)
def test_entries_are_read_the_same_way(entry: str, allowed: bool) -> None:
    assert is_allowed("http://allowed/ok", [entry]) is allowed


def test_any_entry_may_allow() -> None:
    assert is_allowed("https://b/fhir/x", ["https://a/fhir", "https://b/fhir"])
    assert not is_allowed("https://c/fhir", ["https://a/fhir", "https://b/fhir"])
    assert not is_allowed("https://a/fhir", [])


def test_a_next_link_may_carry_a_query_a_base_url_may_not() -> None:
    assert is_within("https://ehr/fhir/Condition?page=2", "https://ehr/fhir/", query=True)
    assert not is_within("https://ehr/fhir/Condition?page=2", "https://ehr/fhir/")
    assert not is_within("https://ehr/fhir/../admin?page=2", "https://ehr/fhir/", query=True)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("http://127.0.0.1:9/fhir/../admin/Condition?page=2", "a next link points outside"),
        ("../admin/Condition?patient=p", "a query points outside"),
    ],
)
def test_the_client_sends_nothing_outside_the_server(query: str, reason: str) -> None:
    """Refused before any request is made (port 9 would not answer anyway)."""
    fetcher = FhirFetcher(0.5, 1.0, page_limit=3)
    try:
        result = fetcher.fetch("http://127.0.0.1:9/fhir", "token", {"conditions": query})
    finally:
        fetcher.close()
    assert result.failures["conditions"].startswith(reason)
