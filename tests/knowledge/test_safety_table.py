"""The criteria grammar of the treatment-safety table, defined once (issue 13, point 2).

knowledge/safety.py `CRITERIA` names each criterion and the shape of its argument; the loader
checks every row against it, rules/treatment_safety.py `EVALUATORS` evaluates exactly those
names, the table's own header documents each of them, and what a table rule reads is derived
from its criteria.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds_service.knowledge.safety import CRITERIA, TABLE_FILE, load_table
from cds_service.rules import READS
from cds_service.rules.treatment_safety import EVALUATORS


def test_the_evaluator_evaluates_exactly_the_grammar() -> None:
    assert set(EVALUATORS) == set(CRITERIA)


def test_the_table_header_documents_every_criterion() -> None:
    header = "\n".join(
        line for line in TABLE_FILE.read_text(encoding="utf-8").splitlines() if line[:1] == "#"
    )
    for name in CRITERIA:
        assert re.search(rf"\b{name}\b", header), name


def _table(tmp_path: Path, when: str) -> Path:
    path = tmp_path / "safety.yaml"
    path.write_text(
        "rules:\n  r:\n    drugs: [diltiazem]\n    sources: [s]\n    rows:\n"
        f"      - {{when: {when}, variant: v}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{renal_belo: 30}", "unknown criteria"),
        ("{renal_below: thirty}", r"renal_below: expected a number"),
        ("{renal_stale: yes please}", r"renal_stale: expected true"),
        ("{condition: hypotension}", r"condition: expected a list of value set ids"),
        ("{lab_below: {concept: systolic-bp, value: 90}}", r"lab_below: expected keys"),
        ("{any: [{partner: true}, {renal_below: low}]}", r"any\[1\]\.renal_below"),
        ("{all: []}", "expected a list of criteria"),
        (
            "{current_condition: {condition: [hypotension], max_age_days: 90, "
            "unless_lab_at_least: {concept: systolic-bp}}}",
            r"current_condition: expected unless_lab_at_least: keys",
        ),
    ],
)
def test_a_row_that_breaks_the_grammar_is_refused(tmp_path: Path, when: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_table.__wrapped__(_table(tmp_path, when))


def test_a_row_that_follows_the_grammar_loads(tmp_path: Path) -> None:
    table = load_table.__wrapped__(_table(tmp_path, "{any: [{renal_below: 30}, {partner: true}]}"))
    assert table["r"].rows[0].when == {"any": [{"renal_below": 30}, {"partner": True}]}


def test_what_a_table_rule_reads_follows_from_its_criteria() -> None:
    assert READS["ccb-hypotension"].observations == ("systolic-bp",)
    assert READS["ccb-hypotension"].conditions == ("hypotension",)
    assert READS["ccb-hypotension"].medications == ("diltiazem", "verapamil")
    renal = READS["colchicine-renal"]
    assert {"egfr", "creatinine"} <= set(renal.observations)
    assert "dialysis-procedure" in renal.procedures
    assert renal.patient
    assert READS["warfarin-minocycline"].observations == ()
