"""Issue 14, point 2 (minocycline precautions, US minocycline labels, Warnings):

* renal impairment (`minocycline-renal`): a current eGFR below 60, a coded CKD stage or dialysis
  is a warning "at most 200 mg a day, watch urea and creatinine"; a stale result or no renal data
  gives no card (the label sets no renal limit the calcinosis dose would cross: docs/knowledge.md);
* pregnancy (`minocycline-pregnancy`): an active pregnancy asserted within 300 days (or undated)
  is a warning (fetal harm, tooth discolouration); an entry left active for years is not current;
* autoimmune syndromes (`minocycline-autoimmune`): in SSc, lupus or dermatomyositis, a warning at
  the order hooks only (`at_order`), never at patient-view, and never a reason to withhold a
  card's minocycline proposal (rules/coherence.py): it is shown when that proposal is ordered."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.fhir.record import Located
from cds_service.knowledge.chart import Chart, build_chart
from cds_service.knowledge.safety import CRITERIA, _check_criterion, load_table
from cds_service.rules import RULES, coherence
from cds_service.rules.treatment_safety import EVALUATORS, PROPOSED_PREFIX, holds
from tests import helpers as h
from tests.conftest import NOW

MINOCYCLINE = "6980"
SSC = (h.SNOMED, "89155008")
LUPUS = (h.ICD10CM, "M32.9")
DERMATOMYOSITIS = (h.SNOMED, "396230008")


def dated(resource: dict[str, Any], days_ago: int) -> dict[str, Any]:
    return {**resource, "onsetDateTime": h.when(days_ago), "recordedDate": h.when(days_ago)}


def at_order(resources: list[dict[str, Any]], draft: dict[str, Any]) -> Chart:
    located = [Located(f"prefetch.test.entry[{i}].resource", r) for i, r in enumerate(resources)]
    order = {**draft, "status": "draft", "authoredOn": NOW.date().isoformat()}
    return build_chart(located, h.PID, h.TERMINOLOGY, NOW, [Located("context.d[0]", order)])


def mino() -> dict[str, Any]:
    return h.drug(MINOCYCLINE, rid="mino")


# ------------------------------------------------------------------------ renal impairment


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ((h.egfr(45),), ["renal-impairment"]),
        ((h.egfr(59),), ["renal-impairment"]),
        ((h.condition(h.ICD10CM, "Z99.2", rid="hd"),), ["renal-impairment"]),  # dialysis
        ((h.condition(h.ICD10CM, "N18.4", rid="ckd"),), ["renal-impairment"]),
        ((h.egfr(60),), []),
        ((h.egfr(85),), []),
        ((h.egfr(40, days_ago=500),), []),  # stale: no recheck row, by design
        ((), []),  # no renal data: no "unknown" row, by design
    ],
)
def test_minocycline_in_renal_impairment(resources: tuple, expected: list[str]) -> None:
    assert h.variants("minocycline-renal", h.patient(), mino(), *resources) == expected


def test_the_renal_rule_has_no_stale_or_unknown_rows_and_says_why() -> None:
    rule = load_table()["minocycline-renal"]
    names = {name for row in rule.rows for name in row.when}
    assert names == {"renal_below"}
    assert all(row.label is None for row in rule.rows)  # a warning
    assert any("200 mg" in source for source in rule.sources)


# ---------------------------------------------------------------------------------- pregnancy


@pytest.mark.parametrize(
    ("pregnancy", "expected"),
    [
        (dated(h.condition(h.ICD10CM, "Z33.1", rid="preg"), 60), ["pregnancy"]),
        (dated(h.condition(h.SNOMED, "77386006", rid="preg"), 250), ["pregnancy"]),
        (h.condition(h.SNOMED, "77386006", rid="preg"), ["pregnancy"]),  # undated
        (dated(h.condition(h.ICD10CM, "Z34.90", rid="preg"), 30), ["pregnancy"]),
        (dated(h.condition(h.SNOMED, "77386006", rid="preg"), 700), []),  # not current
        (dated(h.condition(h.SNOMED, "77386006", rid="preg", clinical="resolved"), 30), []),
        (h.condition("", "", rid="preg", text="Grossesse en cours, 12 SA"), ["pregnancy"]),
    ],
)
def test_minocycline_in_pregnancy(pregnancy: dict[str, Any], expected: list[str]) -> None:
    rec = [h.patient(birth="1993-03-01"), h.egfr(110), mino(), pregnancy]
    assert h.variants("minocycline-pregnancy", *rec) == expected


def test_pregnancy_is_a_warning_not_a_critical_row() -> None:
    assert all(row.label is None for row in load_table()["minocycline-pregnancy"].rows)


# ---------------------------------------------------------------------- autoimmune syndromes


@pytest.mark.parametrize("disease", [SSC, LUPUS, DERMATOMYOSITIS])
def test_in_a_connective_tissue_disease_the_warning_comes_at_order_time(
    disease: tuple[str, str],
) -> None:
    resources = [h.patient(), h.egfr(85), h.condition(*disease, rid="ctd")]
    rec = at_order(resources, mino())
    assert [f.variant for f in RULES["minocycline-autoimmune"](rec)] == [
        "connective-tissue-disease"
    ]


def test_never_at_patient_view_and_never_without_a_connective_tissue_disease() -> None:
    ssc = h.condition(*SSC, rid="ctd")
    assert h.variants("minocycline-autoimmune", h.patient(), h.egfr(85), mino(), ssc) == []
    rec = at_order([h.patient(), h.egfr(85)], mino())
    assert RULES["minocycline-autoimmune"](rec) == []


def test_a_proposal_of_minocycline_is_not_withheld_for_the_disease_it_treats() -> None:
    # The synthesis card proposes minocycline for inflammatory calcinosis in SSc: the
    # order-time precaution must not withhold it (it is shown once the proposal is ordered).
    assert coherence.PROPOSED_REF.startswith(PROPOSED_PREFIX)
    rec = h.record(h.patient(), h.egfr(85), h.condition(*SSC, rid="ctd"))
    assert "minocycline" not in coherence.withheld_proposals(rec, {"minocycline"})
    # a pregnancy still withholds it (a warning the patient-view response would give)
    pregnant = h.record(
        h.patient(), h.egfr(85), dated(h.condition(h.ICD10CM, "Z33.1", rid="preg"), 30)
    )
    withheld = coherence.withheld_proposals(pregnant, {"minocycline"})
    assert [f.rule for f in withheld["minocycline"].findings] == ["minocycline-pregnancy"]


def test_the_at_order_criterion_is_in_the_grammar() -> None:
    assert "at_order" in CRITERIA
    assert "at_order" in EVALUATORS
    _check_criterion("test", {"at_order": True})
    with pytest.raises(ValueError, match="at_order: expected true"):
        _check_criterion("test", {"at_order": "yes"})
    assert holds({"at_order": True}, h.record(h.patient())) == (False, [])
    assert holds({"at_order": True}, at_order([h.patient()], mino()))[0]
