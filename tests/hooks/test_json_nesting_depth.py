"""validation.json_nesting_depth: the nesting depth of a JSON text without parsing it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.hooks.validation import json_nesting_depth
from tests.conftest import SERVICES, fixture_names, load_request


def depth_of(value: Any) -> int:
    """The reference: the depth of the parsed value (a scalar is 0, `[]` is 1)."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# Strings full of what could fool a scanner: brackets, quotes, backslashes, escapes.
TRICKY = st.text(alphabet='[]{}"\\/,:ab\n\té\u2028', max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, ascii_only=st.booleans(), indent=st.sampled_from([None, 2]))
def test_depth_of_any_json_text(value: Any, ascii_only: bool, indent: int | None) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode("utf-8")
    assert json_nesting_depth(raw) == depth_of(value)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b'"[[{"', 0),
        (b"[]", 1),
        (b'{"a": "\\\\"}', 1),
        (b'{"a": "\\"[["}', 1),
        (b'["\\\\\\"[[["]', 1),
        (b'[{"a": [1, {"b": "]}"}]}]', 4),
        (b"[" * 100 + b"]" * 100, 100),
    ],
)
def test_depth_of_known_texts(raw: bytes, depth: int) -> None:
    assert json_nesting_depth(raw) == depth


def test_unbalanced_text_counts_its_brackets() -> None:
    assert json_nesting_depth(b"[" * 70) == 70
    assert json_nesting_depth(b'{"a": [[[') == 4


def test_counting_stops_past_the_limit() -> None:
    raw = b"[" * 5000 + b"]" * 5000
    assert json_nesting_depth(raw, limit=64) > 64
    assert json_nesting_depth(raw) == 5000
    assert json_nesting_depth(b"[[[]]]", limit=64) == 3


@pytest.mark.parametrize(("hook", "name"), [(h, n) for h in SERVICES for n in fixture_names(h)])
def test_fixture_requests(hook: str, name: str) -> None:
    request = load_request(name, hook)
    for indent in (None, 2):
        raw = json.dumps(request, indent=indent, ensure_ascii=False).encode("utf-8")
        assert json_nesting_depth(raw) == depth_of(request)
