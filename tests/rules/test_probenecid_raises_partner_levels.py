"""Issue 14, point 10: probenecid blocks the renal tubular secretion of other drugs (probenecid
label): methotrexate (reduce its dose, monitor: a warning), NSAIDs (a warning) and beta-lactams
(levels raised 2- to 4-fold for penicillins, often on purpose: the quietest, an info).
cds_service/knowledge/safety.yaml ``probenecid-interaction``; its card cites the DailyMed label,
never a secondary web page."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cds_service.rules import RULES
from cds_service.settings import DEFAULT_CARDS_DIR
from tests.helpers import drug, egfr, medication, patient, record, variants

RULE = "probenecid-interaction"
PROBENECID = "8698"


def probenecid() -> dict[str, Any]:
    return drug(PROBENECID, rid="pb")


@pytest.mark.parametrize(
    ("partner", "variant"),
    [
        ("6851", "methotrexate"),
        ("105586", "methotrexate"),  # Methotrexate 10 MG Oral Tablet
        ("7258", "nsaid"),  # naproxen
        ("5781", "nsaid"),  # indomethacin
        ("2231", "beta-lactam"),  # cephalexin
        ("3356", "beta-lactam"),  # dicloxacillin
        ("1665021", "beta-lactam"),  # ceftriaxone 1000 MG Injection
    ],
)
def test_each_partner_gives_its_variant(partner: str, variant: str) -> None:
    assert variants(RULE, patient(), egfr(85), probenecid(), drug(partner, rid="x")) == [variant]


def test_the_beta_lactam_finding_is_the_quietest() -> None:
    card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{RULE}.yaml").read_text(encoding="utf-8"))
    indicators = {name: v["indicator"] for name, v in card["variants"].items()}
    assert indicators == {"methotrexate": "warning", "nsaid": "warning", "beta-lactam": "info"}


def test_cards_cite_the_label_not_a_secondary_page() -> None:
    card = yaml.safe_load((DEFAULT_CARDS_DIR / f"{RULE}.yaml").read_text(encoding="utf-8"))
    urls = [card["source"]["url"], *(link["url"] for link in card["links"])]
    assert all(u.startswith("https://dailymed.nlm.nih.gov/") for u in urls), urls


def test_several_partners_are_findings_about_the_same_probenecid_order() -> None:
    findings = RULES[RULE](
        record(patient(), probenecid(), drug("7258", rid="n"), drug("2231", rid="c"))
    )
    assert sorted(f.variant for f in findings) == ["beta-lactam", "nsaid"]
    assert {f.facts["drug"].ref for f in findings} == {"MedicationRequest/pb"}


def test_no_partner_or_a_topical_nsaid_is_silent() -> None:
    assert variants(RULE, patient(), probenecid()) == []
    gel = medication(rid="g", medicationCodeableConcept={"text": "ketoprofen 2.5% gel"})
    assert variants(RULE, patient(), probenecid(), gel) == []
