"""Treatment safety: one engine for the table of contraindications and cautions.

The table is data (``knowledge/safety.yaml``): per rule, the drugs it checks, rows of
criterion -> card variant, and the sources of each rule (drug labels and seeds). This module
only reads the table and evaluates criteria against the patient record: `EVALUATORS` maps each
name of the grammar (knowledge/safety.py `CRITERIA`) to one function, and the module refuses
to load when the two name different criteria.

When: an order under review (active at patient-view, draft at order-select / order-sign) of a
rule's drugs, and a row's criterion holds (the first that holds wins).
Then: one finding per order (per pair for interactions), naming the order, the criterion and
its evidence. See the table for each rule's sources (seed 002, KDIGO, Colcrys, Cartia XT,
Minocin and probenecid labels, bisphosphonate labels as quoted).

Severity (issue 12): a critical row applies a label contraindication to current data only.
``renal_below`` reads a current renal status (a recent laboratory result, a coded stage,
dialysis), never a stale result: a result older than 12 months matches ``renal_stale`` (a
"recheck" warning) and no renal data ``renal_unknown``. ``current_condition`` reads a coded
condition only while it is recent and not contradicted by a newer reading (a hypotension
coded years ago, with a normal pressure since, is not today's hypotension).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from cds_service.fhir.record import DataNote, LabResult, MedicationFact
from cds_service.knowledge.chart import Chart
from cds_service.knowledge.renal import RenalStatus
from cds_service.knowledge.safety import (
    CODED_STAGE_BOUND,
    CRITERIA,
    Row,
    SafetyRule,
    load_table,
)
from cds_service.rules.base import Finding, Reads
from cds_service.rules.predicates import (
    RENAL_READS,
    all_orders,
    at_least,
    below,
    conditions_of,
    daily_dose_at_least,
    daily_dose_unread,
    high_calcium,
    is_parenteral,
    is_positive,
    is_recent,
    low_calcium,
    prednisone_equivalent,
    recent_lab,
)

# --------------------------------------------------------------------------- criteria

# The value sets the renal status is read from (labs and coded conditions).
RENAL_CONCEPTS = frozenset(
    {
        "egfr",
        "creatinine",
        "dialysis",
        "ckd-stage-3",
        "ckd-stage-4",
        "ckd-stage-5",
        "renal-insufficiency-unstaged",
    }
)


def renal_bound(renal: RenalStatus) -> float | None:
    """The eGFR the current renal status stands for; None when nothing current is known (no
    renal data, or only a stale result: ``renal_stale`` rows handle it)."""
    if renal.dialysis:
        return 0.0
    if renal.source == "coded":
        return CODED_STAGE_BOUND[renal.category]
    if renal.source in ("measured", "computed") and not renal.stale:
        return renal.rule_egfr  # "<15" is just below 15, ">60" just above 60
    return None


def renal_notes(record: Chart) -> list[DataNote]:
    """Notes about renal data that could not be used (a unit not recognised, an unreadable
    eGFR): part of the renal evidence, so the card says what it could not read."""
    return [n for n in record.notes if n.concept in RENAL_CONCEPTS]


def _renal_evidence(record: Chart) -> list[Any]:
    renal = record.renal
    return [
        renal,
        *[e for e in (renal.condition, renal.lab) if e is not None],
        *renal_notes(record),
    ]


def holds(when: Mapping[str, Any], record: Chart) -> tuple[bool, list[Any]]:
    """Whether a criterion holds, and the record facts that make it hold (the first one is
    what the card calls the criterion)."""
    evidence: list[Any] = []
    for key, value in when.items():
        ok, found = EVALUATORS[key](value, record)
        if not ok:
            return False, []
        evidence += found
    return True, evidence


Evaluation = tuple[bool, list[Any]]


def _renal_below(limit: float, record: Chart) -> Evaluation:
    bound = renal_bound(record.renal)
    ok = bound is not None and bound < limit
    return ok, _renal_evidence(record) if ok else []


def _renal_below_inclusive(limit: float, record: Chart) -> Evaluation:
    bound = renal_bound(record.renal)
    ok = bound is not None and bound <= limit
    return ok, _renal_evidence(record) if ok else []


def _renal_stale(_value: bool, record: Chart) -> Evaluation:
    renal = record.renal
    ok = renal.source in ("measured", "computed") and renal.stale
    return ok, _renal_evidence(record) if ok else []


def _renal_unknown(_value: bool, record: Chart) -> Evaluation:
    renal = record.renal
    return (not renal.known), ([renal, *renal_notes(record)] if not renal.known else [])


def _condition(valuesets: list[str], record: Chart) -> Evaluation:
    found = conditions_of(record, valuesets)
    return bool(found), found


def _latest_lab(
    value: Mapping[str, Any], record: Chart, test: Callable[[LabResult], bool]
) -> Evaluation:
    """The latest result of ``value["concept"]``, within ``value["max_age_days"]``, passes
    `test`; that result is the evidence."""
    lab = recent_lab(record, value["concept"], value["max_age_days"])
    ok = lab is not None and test(lab)
    return ok, [lab] if ok else []


def _lab_below(value: Mapping[str, Any], record: Chart) -> Evaluation:
    return _latest_lab(value, record, lambda lab: below(lab, value["value"]))


def _calcium_above_range(value: Mapping[str, Any], record: Chart) -> Evaluation:
    found = high_calcium(record, value["max_age_days"])
    return bool(found), list(found)


def _calcium_below_range(value: Mapping[str, Any], record: Chart) -> Evaluation:
    found = low_calcium(record, value["max_age_days"])
    return bool(found), list(found)


def _lab_below_range(value: Mapping[str, Any], record: Chart) -> Evaluation:
    """Below the laboratory's range (its reference range low, or flagged L / LL): a result
    without a range or flag never matches."""
    return _latest_lab(value, record, lambda lab: lab.below_range)


def _lab_above_range(value: Mapping[str, Any], record: Chart) -> Evaluation:
    """Above the laboratory's range (its reference range high, or flagged H / HH)."""
    return _latest_lab(value, record, lambda lab: lab.above_range)


def _lab_at_least(value: Mapping[str, Any], record: Chart) -> Evaluation:
    """At or above the value; an upper bound ("<X") never is."""
    return _latest_lab(
        value,
        record,
        lambda lab: at_least(lab, value["value"]) and lab.comparator not in ("<", "<="),
    )


def _no_recent_result(value: Mapping[str, Any], record: Chart) -> Evaluation:
    """No readable result of the concept, quantitative or qualitative, within
    ``max_age_days``. Its evidence is what could not be read of that concept, if anything (the
    card then says that a result was there but unreadable)."""
    concept, max_days = value["concept"], value["max_age_days"]
    lab = record.labs.get(concept)
    coded = record.results.get(concept)
    found = [r for r in (lab, coded) if r is not None and is_recent(r.when, record.now, max_days)]
    if found:
        return False, []
    return True, [n for n in record.notes if n.concept == concept]


def _positive_result(value: Mapping[str, Any], record: Chart) -> Evaluation:
    """The latest result of the concept is positive (rules/predicates.py `is_positive`)."""
    result = record.results.get(value["concept"])
    ok = result is not None and is_positive(result)
    return ok, [result] if ok else []


def _partner(_value: bool, _record: Chart) -> Evaluation:
    return True, []


# The reference prefix of the hypothetical draft a card's proposal is checked as
# (rules/coherence.py builds its PROPOSED_REF from it).
PROPOSED_PREFIX = "MedicationRequest/(proposed "


def _at_order(_value: bool, record: Chart) -> Evaluation:
    """True at order-select / order-sign (the record holds real drafts under review), false at
    patient-view: a precaution for the moment of prescribing, not a standing card. A card's
    proposal, checked at patient-view as a hypothetical draft (rules/coherence.py), is no order
    hook: the precaution is shown when the proposal becomes a draft, and does not withhold it."""
    drafts = record.drafts or ()
    return any(not d.ref.startswith(PROPOSED_PREFIX) for d in drafts), []


def _any(criteria: list[Mapping[str, Any]], record: Chart) -> Evaluation:
    for sub in criteria:
        ok, found = holds(sub, record)
        if ok:
            return True, found
    return False, []


def _all(criteria: list[Mapping[str, Any]], record: Chart) -> Evaluation:
    evidence: list[Any] = []
    for sub in criteria:
        ok, found = holds(sub, record)
        if not ok:
            return False, []
        evidence += found
    return True, evidence


def _current_condition(value: Mapping[str, Any], record: Chart) -> Evaluation:
    """An active condition of the value sets that is current: asserted (latest of onset and
    recordedDate) within ``max_age_days``, or undated; and not contradicted by the latest
    reading of ``unless_lab_at_least.concept`` at or above its value, taken after the
    assertion (after ``max_age_days`` ago for an undated condition). Evidence: the condition,
    then the latest reading when it agrees (below the value, within the reading's own
    ``max_age_days``)."""
    max_age = value["max_age_days"]
    unless = value.get("unless_lab_at_least")
    lab = record.labs.get(unless["concept"]) if unless else None
    today = record.now.date()
    for condition in conditions_of(record, value["condition"]):
        asserted = condition.asserted
        if asserted is not None and (today - asserted).days > max_age:
            continue  # an old entry: not today's state
        if unless and lab is not None and at_least(lab, unless["value"]):
            since = asserted if asserted is not None else today - timedelta(days=max_age)
            if lab.when.date() >= since and lab.comparator not in ("<", "<="):
                continue  # a newer normal reading contradicts it
        agrees = (
            lab is not None
            and unless is not None
            and below(lab, unless["value"])
            and (today - lab.when.date()).days <= unless.get("max_age_days", max_age)
        )
        return True, [condition, *([lab] if agrees else [])]
    return False, []


# The evaluator of each criterion of the grammar (knowledge/safety.py CRITERIA): one function
# per name, and the same names, or the module refuses to load.
EVALUATORS: Mapping[str, Callable[[Any, Chart], Evaluation]] = {
    "renal_below": _renal_below,
    "renal_below_inclusive": _renal_below_inclusive,
    "renal_stale": _renal_stale,
    "renal_unknown": _renal_unknown,
    "condition": _condition,
    "current_condition": _current_condition,
    "lab_below": _lab_below,
    "calcium_above_range": _calcium_above_range,
    "calcium_below_range": _calcium_below_range,
    "lab_below_range": _lab_below_range,
    "lab_above_range": _lab_above_range,
    "lab_at_least": _lab_at_least,
    "no_recent_result": _no_recent_result,
    "positive_result": _positive_result,
    "partner": _partner,
    "at_order": _at_order,
    "any": _any,
    "all": _all,
}
if set(EVALUATORS) != set(CRITERIA):
    raise RuntimeError(
        "treatment_safety.EVALUATORS and knowledge/safety.py CRITERIA name different criteria: "
        f"{sorted(set(EVALUATORS) ^ set(CRITERIA))}"
    )


# --------------------------------------------------------------------------- rules


def _first_row(
    rule: SafetyRule,
    record: Chart,
    order: MedicationFact,
    partner: MedicationFact | None = None,
) -> tuple[Row, list[Any]] | None:
    for row in rule.rows:
        if row.drug is not None and row.drug not in order.valuesets:
            continue
        # In an interaction, an oral-only row needs both orders oral (chelation in the gut).
        if row.route == "oral" and any(is_parenteral(o) for o in (order, partner) if o):
            continue
        if row.route == "parenteral" and not is_parenteral(order):
            continue
        if row.partners and (partner is None or not partner.valuesets & set(row.partners)):
            continue
        if row.min_daily_dose and not daily_dose_at_least(
            order, row.min_daily_dose["prednisone_mg"]
        ):
            continue
        if row.unread_daily_dose and not daily_dose_unread(
            order, row.unread_daily_dose["prednisone_mg"]
        ):
            continue
        ok, evidence = holds(row.when, record)
        if ok:
            return row, evidence
    return None


def _finding(
    rule: SafetyRule,
    row: Row,
    order: MedicationFact,
    evidence: list[Any],
    other: MedicationFact | None = None,
) -> Finding:
    facts: dict[str, Any] = {"drug": order, "renal": record_renal(evidence), **(row.params or {})}
    if other is not None:
        facts["other"] = other
    if row.min_daily_dose or row.unread_daily_dose:
        dose = prednisone_equivalent(order)
        if dose is not None:
            facts["daily_dose"] = dose.mg  # prednisone-equivalent mg per day, as read
    if evidence:
        facts["criterion"] = evidence[0]
    listed = [e for e in evidence if not isinstance(e, RenalStatus)]
    return Finding(
        rule.id,
        row.variant,
        facts=facts,
        evidence=tuple(dict.fromkeys([order, *([other] if other else []), *listed])),
    )


def record_renal(evidence: list[Any]) -> RenalStatus | None:
    return next((e for e in evidence if isinstance(e, RenalStatus)), None)


def evaluate_rule(rule: SafetyRule, record: Chart) -> list[Finding]:
    if not rule.interaction:
        findings = []
        for order in {o.ref: o for vs in rule.drugs for o in record.orders_in(vs)}.values():
            first = _first_row(rule, record, order)
            if first is not None:
                findings.append(_finding(rule, first[0], order, first[1]))
        return findings
    under_review = {o.ref for vs in (*rule.drugs, *rule.partners) for o in record.orders_in(vs)}
    orders = all_orders(record)
    drugs = [o for o in orders if o.valuesets & set(rule.drugs)]
    partners = [o for o in orders if o.valuesets & set(rule.partners)]
    findings = []
    for drug in drugs:
        for partner in partners:
            if drug.ref == partner.ref or not {drug.ref, partner.ref} & under_review:
                continue
            first = _first_row(rule, record, drug, partner)
            if first is None:
                continue
            # The card is about the order under review; the other one is the partner.
            subject, other = (drug, partner) if drug.ref in under_review else (partner, drug)
            findings.append(_finding(rule, first[0], subject, first[1], other))
    return findings


def reads(rule: SafetyRule) -> Reads:
    """What a table rule reads: its drugs and partners, the value sets and laboratory concepts
    its criteria name (knowledge/safety.py CRITERIA), and the renal status when a criterion
    reads it."""
    own = Reads(
        observations=tuple(sorted(rule.lab_concepts())),
        conditions=tuple(sorted(rule.condition_valuesets())),
        medications=(*rule.drugs, *rule.partners),
    )
    return own | RENAL_READS if rule.reads_renal else own


def table_rules() -> dict[str, Callable[[Chart], list[Finding]]]:
    """One rule callable per table entry, for the rule registry."""

    def make(rule: SafetyRule) -> Callable[[Chart], list[Finding]]:
        return lambda record: evaluate_rule(rule, record)

    return {rule_id: make(rule) for rule_id, rule in load_table().items()}
