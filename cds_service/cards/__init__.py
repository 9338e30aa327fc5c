"""Findings + card content (``cards/*.yaml``, French and English) -> CDS Hooks cards.

Card text never lives in Python. One concern per module:

- library.py: the card content files, read and checked at start-up (`load_library`);
- facts.py: which placeholders each fact key of a finding fills (the renderer's only table);
- text.py: locale-aware text of record facts (numbers, units, dates, renal status, lists);
- actions.py: suggestions as FHIR resources, and the drugs a card may propose;
- render.py: one finding (and those merged into it) -> one card (`Renderer`).
"""

from cds_service.cards.actions import proposed_valuesets
from cds_service.cards.library import (
    INDICATORS,
    CardContent,
    CardContentError,
    CardLibrary,
    load_library,
)
from cds_service.cards.render import SUMMARY_MAX, Renderer, shorten
from cds_service.cards.text import md_escape

__all__ = [
    "INDICATORS",
    "SUMMARY_MAX",
    "CardContent",
    "CardContentError",
    "CardLibrary",
    "Renderer",
    "load_library",
    "md_escape",
    "proposed_valuesets",
    "shorten",
]
