"""Whether a URL names a place an allow-list allows: one answer for the FHIR servers a
deployment may query (CDS_FHIR_SERVERS), those an issuer's requests may name, and the pages and
queries the FHIR client follows on a server.

URLs are compared as the places they name (RFC 3986, section 6), never as strings: the scheme
and host in any letter case, the default port written or not, ``.`` and ``..`` segments
resolved, percent-encoded unreserved characters decoded, a trailing slash ignored. An allowed
entry then allows its own path and the paths below it on a ``/`` boundary: ``https://ehr/fhir``
allows ``https://ehr/fhir/tenant-a``, not ``https://ehr/fhir-test`` nor
``https://ehr/fhir/../admin``. A URL that cannot be read as a plain http(s) URL (user
information, a backslash, blanks or control characters, an encoded ``/`` or ``\\`` in its
path) is allowed by nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)

Place = tuple[str, str, int, tuple[str, ...]]


def _decode_unreserved(path: str) -> str:
    """Percent-escapes of unreserved characters decoded, the others in upper case."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _ESCAPE.sub(one, path)


def _segments(path: str) -> tuple[str, ...]:
    """The path's segments with ``.`` and ``..`` resolved (RFC 3986, 5.2.4) and a trailing
    empty segment (a trailing slash) dropped."""
    resolved: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    while resolved and resolved[-1] == "":
        resolved.pop()
    return tuple(resolved)


def place(url: str, *, query: bool = False) -> Place | None:
    """(scheme, host, port, path segments) that `url` names, or None when it is not a plain
    http(s) URL; with `query` False, a URL with a query or a fragment is None too."""
    if not isinstance(url, str) or _UNSAFE.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if not query and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        return None
    path = _decode_unreserved(parts.path)
    if _ENCODED_SEPARATOR.search(path):
        return None
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme], _segments(path)


def is_within(url: str, base: str, *, query: bool = False) -> bool:
    """Whether `url` names `base` or a path below it (same scheme, host and port). `query`
    lets `url` carry a query (a search, a Bundle's next link); `base` never may."""
    found, allowed = place(url, query=query), place(base)
    if found is None or allowed is None:
        return False
    return found[:3] == allowed[:3] and found[3][: len(allowed[3])] == allowed[3]


def is_allowed(url: str, allowed: Iterable[str]) -> bool:
    """Whether `url` (a fhirServer) is one of the `allowed` base URLs or below one."""
    return any(is_within(url, entry) for entry in allowed)
