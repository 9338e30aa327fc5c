"""orjson reads the request bodies and writes the JSON responses (issue 17): the same values and
the same refusals as the standard library, which still reads and writes what orjson cannot."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.errors import InputError
from cds_service.web.body import _parsed
from cds_service.web.json_provider import JsonProvider
from tests.conftest import SERVICE_URL, load_request

HUGE = 123456789012345678901234567890  # past 64 bits: orjson would read it as a float


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 123456789012345678901234567890}',
        b'{"a": -9223372036854775809}',  # 19 digits, below -2**63
        b'{"a": 18446744073709551615, "b": -9223372036854775808}',  # the 64-bit bounds
        b'{"id": "12345678901234567890123"}',  # a long run of digits in a string
        b'{"a": 1e400, "b": -1e400}',  # past the float range: infinity, as json reads it
        b'{"a": 1, "a": 2, "b": [1.5, -0.0, 5e-324, 0.1]}',
        b'{"a": "\\ud83d\\ude00 \\u00e9 \\u0000"}',
        '{"a": "é ∑ 😀"}'.encode(),
        b'\xef\xbb\xbf{"bom": true}',
        '{"utf16": 1}'.encode("utf-16"),
        b'{"a": "\\ud800"}',  # a lone surrogate: read, then refused by json_body
        b' \n\t{"a": [ ]}\r\n',
    ],
)
def test_bodies_read_as_the_standard_library_reads_them(raw: bytes) -> None:
    value, _by_orjson = _parsed(raw)
    assert repr(value) == repr(json.loads(raw))
    assert json.dumps(value) == json.dumps(json.loads(raw))  # types too (int stays int)


def test_orjson_reads_the_common_body() -> None:
    raw = json.dumps(load_request("02-aluminium-egfr-22")).encode()
    assert _parsed(raw) == (json.loads(raw), True)


def test_a_lone_surrogate_is_still_refused(client: FlaskClient) -> None:
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    body["hookInstance"] = "\ud800"
    raw = json.dumps(body).encode()  # ASCII: the surrogate is escaped
    response = client.post(SERVICE_URL, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["diagnostics"] == (
        "body contains an unpaired UTF-16 surrogate"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": NaN}', "body is not valid JSON: NaN is not valid JSON"),
        (b'{"a": -Infinity}', "body is not valid JSON: -Infinity is not valid JSON"),
        (
            b'{"hook": "patient-view",',
            "body is not valid JSON: Expecting property name enclosed in double quotes "
            "(line 1, column 25)",
        ),
        (b'{"a": 00}', "body is not valid JSON: Expecting ',' delimiter (line 1, column 8)"),
        (b"", "body is not valid JSON: Expecting value (line 1, column 1)"),
    ],
)
def test_refusals_keep_their_messages(raw: bytes, message: str) -> None:
    with pytest.raises(InputError) as refused:
        _parsed(raw)
    assert refused.value.message == message
    assert refused.value.path == "$"


def test_invalid_utf8_keeps_the_standard_librarys_message() -> None:
    with pytest.raises(InputError) as refused:
        _parsed(b'{"a": "\xff"}')
    assert refused.value.message.startswith("body is not valid JSON: 'utf-8' codec can't decode")


def test_a_huge_integer_in_an_order_comes_back_exactly(client: FlaskClient) -> None:
    """Read by the standard library (orjson would make it a float), written back by it in the
    stop suggestion that copies the order (orjson refuses to write it)."""
    body = copy.deepcopy(load_request("02-aluminium-egfr-22"))
    for entry in body["prefetch"]["medications"]["entry"]:
        entry["resource"]["dispenseRequest"] = {"quantity": {"value": HUGE, "unit": "mL"}}
    response = client.post(SERVICE_URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert str(HUGE) in response.get_data(as_text=True)
    resources = [
        action["resource"]
        for card in json.loads(response.get_data())["cards"]
        for suggestion in card.get("suggestions", ())
        for action in suggestion["actions"]
        if action["type"] == "update"
    ]
    assert resources
    assert resources[0]["dispenseRequest"]["quantity"]["value"] == HUGE


# ----------------------------------------------------------------------------- responses


def app_returning(value: Any, **config: Any) -> Flask:
    app = Flask(__name__)
    app.json = JsonProvider(app)
    app.json.sort_keys = config.pop("sort_keys", False)
    app.config.update(config)
    app.add_url_rule("/", "value", lambda: app.json.response(value))
    return app


def test_responses_are_written_by_orjson() -> None:
    value = {"b": 1, "a": ["é", 1.5, None, True], "uuid": uuid.UUID(int=1)}
    data = app_returning(value).test_client().get("/").get_data()
    # Compact, keys in order, UTF-8 rather than \u escapes, Flask's trailing newline.
    assert (
        data
        == (
            '{"b":1,"a":["é",1.5,null,true],"uuid":"00000000-0000-0000-0000-000000000001"}\n'
        ).encode()
    )


def test_responses_keep_flasks_conversions_and_options() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    data = app_returning({"z": when, "d": Decimal("1.10")}, sort_keys=True).test_client().get("/")
    assert data.get_data() == b'{"d":"1.10","z":"Fri, 02 Jan 2026 03:04:05 GMT"}\n'
    debug = app_returning({"a": 1}, DEBUG=True)
    debug.debug = True
    assert debug.test_client().get("/").get_data() == b'{\n  "a": 1\n}\n'


@pytest.mark.parametrize(
    "value",
    [{"n": HUGE}, {"s": "\ud800"}, {1: "a non-string key"}],
    ids=["int", "surrogate", "key"],
)
def test_what_orjson_refuses_is_written_as_before(value: Any) -> None:
    response = app_returning(value).test_client().get("/")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == (json.dumps(value, separators=(",", ":")) + "\n").encode()
