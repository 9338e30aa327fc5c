"""The benchmark's requests (bench/patients.py) stay valid and keep the rules at work.

No timing here: `make bench` measures; this only checks that what it measures is a real,
clinically plausible request that produces cards.
"""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from bench import patients
from fixtures.validation import validate_request
from tests.conftest import NOW, SERVICE_URL, assert_valid_response

EXPECTED_CARDS = [
    ("aluminium-hydroxide-renal", "critical"),
    # One card per order (rules/card_set.py): the colchicine renal contraindication (French
    # RCP, issue 14) leads, the colchicine interaction is its "Also" line.
    ("colchicine-renal", "critical"),
    ("calcinosis-type", "warning"),
    # One calcinosis info card, the supplement folded in as a step (rules/info_card.py).
    ("calcinosis-synthesis", "info"),
]


@pytest.mark.parametrize("size", patients.SIZES, ids=lambda s: s.name)
def test_bench_request(client: FlaskClient, size: patients.Size) -> None:
    request = patients.build(size, NOW.date())
    assert patients.resource_count(request) == size.resources
    validate_request(request)  # valid FHIR R4 and CDS Hooks, as the fixtures are
    assert json.loads(patients.body(request)) == request

    response = client.post(
        SERVICE_URL, data=patients.body(request), content_type="application/json"
    )
    assert response.status_code == 200, response.json
    assert_valid_response(response.json)
    cards = [(c["source"]["topic"]["code"], c["indicator"]) for c in response.json["cards"]]
    assert cards == EXPECTED_CARDS


def test_the_record_spans_years_of_declining_renal_function() -> None:
    request = patients.build(patients.SIZES[1], NOW.date())
    egfr = sorted(
        (e["resource"]["effectiveDateTime"], e["resource"]["valueQuantity"]["value"])
        for e in request["prefetch"]["observations"]["entry"]
        if e["resource"]["code"]["coding"][0]["code"] == "98979-8"
    )
    assert len(egfr) >= 24
    assert egfr[0][1] > 45 > 30 > egfr[-1][1]
