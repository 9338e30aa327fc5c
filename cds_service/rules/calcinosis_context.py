"""Calcinosis context: a connective-tissue disease with documented calcinosis.

Sources: seed 000 (Smith G et al., AAD 2019 session F024: treatment by lesion size),
seed 001 (Scleroderma Manitoba, April 2024: general measures, inflammatory lesions, surgery and
shock-wave therapy; references Nowaczyk 2022, Elahmar 2022, Davuluri 2022), seed 002 (review of
SSc-associated calcinosis management: infection, ulceration, drug-by-drug evidence).
Evidence level: case reports, case series and small open studies; no randomised controlled
trial of any medical treatment (seed 001, seed 002).

Dermatomyositis (incl. juvenile, up to 70 % with calcinosis) and lupus also cause dystrophic
calcinosis: seed 003 (causes of dystrophic calcification), seed 004 (epidemiology).

A fact producer for the `calcinosis-synthesis` card (rules/calcinosis_synthesis.py), which
opens with one line of context for the disease found here; this module issues no card of its
own (its former card, `calcinosis-context`, static management text at every chart opening, was
retired (issue 12): that text is now background reading behind the synthesis
card's links).

Reads: an active, not refuted systemic sclerosis (any form); else an active dermatomyositis or
systemic lupus. SSc comes first when a patient has several.
"""

from __future__ import annotations

from typing import Any

from cds_service.knowledge.chart import Chart
from cds_service.rules.base import Reads

OTHER_CTD = ("dermatomyositis", "systemic-lupus")
DISEASES = ("systemic-sclerosis", *OTHER_CTD)
READS = Reads(conditions=DISEASES)


def has_systemic_sclerosis(record: Chart) -> bool:
    return record.has_condition("systemic-sclerosis")


def has_documented_calcinosis(record: Chart) -> bool:
    return record.has_condition("calcinosis")


def disease(record: Chart) -> tuple[str | None, tuple[Any, ...]]:
    """The connective-tissue disease behind the calcinosis (a value set of DISEASES, or None)
    and its conditions."""
    for valueset in DISEASES:
        found = record.conditions_in(valueset)
        if found:
            return valueset, tuple(found)
    return None, ()
