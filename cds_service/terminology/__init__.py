"""Terminology: value sets as data files, and the questions rules ask of them.

A value set file (``valuesets/<id>.yaml``) lists codes, each with the display it was verified
with and where it was verified, plus optional free-text phrases (French and English) used only
when a resource carries no recognised code. Rules and the record builder never hold raw codes:
they ask "which value sets does this CodeableConcept belong to?".

Code systems are matched by their canonical FHIR URI; other spellings EHRs send (OIDs, French
CIM-10 URIs, SNOMED CT version URIs, http/https...) are mapped to it first (systems.py).
ICD-10 codes are compared without the dot and upper-cased (``M34.1`` == ``M341``); an entry
marked ``descendants: true`` also matches every code below it in the ICD hierarchy (``M34``
matches ``M34.81``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.memo import ContentMemo, content_key
from cds_service.terminology import systems
from cds_service.terminology.systems import ATC, ICD10, ICD10CM, LOINC, RXNORM, SNOMED

VALUESET_DIR = Path(__file__).resolve().parent / "valuesets"
# How many orders' drug value sets a Terminology remembers (Terminology.match_medication).
MEDICATIONS_MAX = 4096
# libyaml's loader when the platform has it (several times faster), else the pure-Python one.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

UCUM = "http://unitsofmeasure.org"

ICD_SYSTEMS = frozenset({ICD10CM, ICD10})
SYSTEM_LABELS = {
    SNOMED: "SNOMED CT",
    LOINC: "LOINC",
    RXNORM: "RxNorm",
    ATC: "ATC",
    ICD10CM: "ICD-10-CM",
    ICD10: "ICD-10",
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation": (
        "HL7 v3 ObservationInterpretation"
    ),
}
RESOURCE_TYPES = frozenset(
    {"Condition", "Observation", "MedicationRequest", "ServiceRequest", "Procedure"}
)


class TerminologyError(ValueError):
    """A value set file is malformed (raised at start-up, never per request)."""


def normalise_text(text: str) -> str:
    """Lower-case, strip accents and punctuation, collapse spaces: "Hydroxyde d'Aluminium" ->
    "hydroxyde d aluminium"."""
    # Ligatures first: NFKD leaves "œ" and "æ" whole, and they would become spaces.
    text = text.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE")
    decomposed = unicodedata.normalize("NFKD", text)
    no_accents = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", no_accents.lower()).split())


def normalise_code(system: str, code: str) -> str:
    """A code as the index holds it: without a ``|term|`` suffix or spaces; ICD-10 codes
    upper-cased and without the dot (``m34.1`` -> ``M341``). `system` is canonical."""
    code = systems.bare_code(code)
    if system in ICD_SYSTEMS:
        return code.replace(".", "").replace(" ", "").upper()
    return code


@dataclass(frozen=True)
class Concept:
    """One verified code of a value set."""

    system: str
    code: str
    display: str
    source: str
    descendants: bool = False


@dataclass(frozen=True)
class ValueSet:
    id: str
    title: Mapping[str, str]
    applies_to: str
    description: str
    concepts: tuple[Concept, ...]
    phrases: tuple[str, ...]
    # Drug value sets only: "systemic" when the rules reading the set are about systemic
    # exposure; a product recognised by name, brand or ingredient in a local form (eye drops,
    # cream, shampoo, vaccine...: products/forms.yaml) is then not a member (medicines.py).
    # `systemic_forms` / `local_forms`: words of products/forms.yaml read the other way for it.
    exposure: str = "any"
    systemic_forms: tuple[str, ...] = ()
    local_forms: tuple[str, ...] = ()
    # Drug value sets only: why the set has no RxNorm product code (a French / ATC-only drug,
    # e.g. roxithromycin), read by tests/terminology in place of product codes; None otherwise.
    atc_only_reason: str | None = None

    def first(self, system: str) -> Concept | None:
        """The first concept of this value set in `system` (used to code suggested orders)."""
        return next((c for c in self.concepts if c.system == system), None)


@dataclass(frozen=True)
class Match:
    """How a CodeableConcept was recognised as a member of a value set."""

    valueset: str
    by: str  # "code" or "text"
    system: str | None = None
    code: str | None = None
    display: str | None = None
    # Medicines only (see medicines.py): how the product was recognised ("product code",
    # "ingredient code", "medication code", "ingredient", "name", "brand"), the product's name
    # as sent, the ingredients it holds (lexicon keys, English), those of them that put it in
    # this value set, a caveat on its composition ((lang, text) pairs) and, for a product
    # recognised by a code sent without a name, the name the lexicon knows it by.
    how: str | None = None
    product: str | None = None
    ingredients: tuple[str, ...] = ()
    salts: tuple[str, ...] = ()
    note: tuple[tuple[str, str], ...] = ()
    known_as: str | None = None

    @property
    def label(self) -> str:
        """ "RxNorm 612", "ICD-10-CM L94.2" or "text" (for card evidence)."""
        if self.by == "code" and self.system and self.code:
            return f"{SYSTEM_LABELS.get(self.system, self.system)} {self.code}"
        return "text"


def _load_valueset(path: Path) -> ValueSet:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506
    except yaml.YAMLError as exc:
        raise TerminologyError(f"{path.name}: not valid YAML: {exc}") from exc
    where = path.name
    for key in ("id", "title", "applies_to", "description"):
        if key not in data:
            raise TerminologyError(f"{where}: missing {key!r}")
    if data["id"] != path.stem:
        raise TerminologyError(f"{where}: id {data['id']!r} must equal the file name")
    if data["applies_to"] not in RESOURCE_TYPES:
        raise TerminologyError(f"{where}: applies_to must be one of {sorted(RESOURCE_TYPES)}")
    concepts = []
    for i, entry in enumerate(data.get("codes") or []):
        for key in ("system", "code", "display", "source"):
            if not entry.get(key):
                raise TerminologyError(f"{where}: codes[{i}] has no {key!r}")
        if entry["system"] not in SYSTEM_LABELS:
            raise TerminologyError(f"{where}: codes[{i}] has an unknown system {entry['system']}")
        concepts.append(
            Concept(
                system=entry["system"],
                code=str(entry["code"]),
                display=entry["display"],
                source=entry["source"],
                descendants=bool(entry.get("descendants", False)),
            )
        )
    phrases = tuple(normalise_text(p) for p in data.get("text") or [])
    if not concepts and not phrases:
        raise TerminologyError(f"{where}: a value set needs codes or text phrases")
    exposure = data.get("exposure", "any")
    if exposure not in ("any", "systemic"):
        raise TerminologyError(f"{where}: exposure must be 'any' or 'systemic'")
    forms = {}
    for key in ("systemic_forms", "local_forms"):
        words = data.get(key) or []
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise TerminologyError(f"{where}: {key} must be a list of words")
        forms[key] = tuple(normalise_text(w) for w in words)
    atc_only_reason = data.get("atc_only_reason")
    if atc_only_reason is not None and not (
        isinstance(atc_only_reason, str) and atc_only_reason.strip()
    ):
        raise TerminologyError(f"{where}: atc_only_reason must be a non-empty text")
    return ValueSet(
        id=data["id"],
        title=data["title"],
        applies_to=data["applies_to"],
        description=data["description"],
        concepts=tuple(concepts),
        phrases=phrases,
        exposure=exposure,
        atc_only_reason=atc_only_reason,
        **forms,
    )


@cache
def _load_terminology(directory: Path) -> Terminology:
    terminology = Terminology(_load_valueset(p) for p in sorted(directory.glob("*.yaml")))
    if directory == VALUESET_DIR:  # the product lexicon (products/) is checked at start-up too
        from cds_service.terminology.products import load_lexicon

        load_lexicon().check(terminology.valuesets)
    return terminology


class Terminology:
    """All value sets, indexed once at start-up for constant-time lookups per coding."""

    def __init__(self, valuesets: Iterable[ValueSet]) -> None:
        self.valuesets: dict[str, ValueSet] = {}
        self._exact: dict[tuple[str, str], list[str]] = {}
        self._prefixes: dict[str, list[tuple[str, str]]] = {}
        self._phrases: dict[str, list[tuple[str, str]]] = {}
        for vs in valuesets:
            if vs.id in self.valuesets:
                raise TerminologyError(f"duplicate value set id {vs.id!r}")
            self.valuesets[vs.id] = vs
            for c in vs.concepts:
                key = (c.system, normalise_code(c.system, c.code))
                self._exact.setdefault(key, []).append(vs.id)
                if c.descendants:
                    self._prefixes.setdefault(c.system, []).append((key[1], vs.id))
            for phrase in vs.phrases:
                self._phrases.setdefault(vs.applies_to, []).append((f" {phrase} ", vs.id))
        # The drug value sets of the last orders seen, by what match_medication reads.
        self._medications: ContentMemo[tuple[Match, ...]] = ContentMemo(MEDICATIONS_MAX)

    @classmethod
    def load(cls, directory: Path = VALUESET_DIR) -> Terminology:
        """The value sets of `directory`, read once per process (they never change while it
        runs; treat the result as read-only)."""
        return _load_terminology(directory)

    def __getitem__(self, valueset_id: str) -> ValueSet:
        return self.valuesets[valueset_id]

    def codes(self, valueset_id: str, system: str) -> list[str]:
        """The codes of a value set in one system (used to build prefetch queries)."""
        return [c.code for c in self.valuesets[valueset_id].concepts if c.system == system]

    def match_medication(
        self,
        concept: Mapping[str, Any] | None,
        medication: Mapping[str, Any] | None,
        request: Mapping[str, Any] | None = None,
    ) -> list[Match]:
        """Drug value sets a medication order belongs to ("any product containing this
        ingredient"): `concept` is MedicationRequest.medicationCodeableConcept, `medication` the
        resolved Medication resource, `request` the MedicationRequest (its dosageInstruction
        routes); any may be None. See medicines.py. The same product, Medication and dosage
        instructions are recognised once per process (cds_service/memo.py): many orders name
        the same drugs, and an EHR sends the same orders again at each chart opening."""
        from cds_service.terminology.medicines import match_medication

        # What medicines.py reads: the concept, the Medication, the request's dosage
        # instructions (routes, sites, texts), and nothing else of the request. An absent
        # part is left out of the key, since a null keeps any content from being remembered.
        dosages = request.get("dosageInstruction") if isinstance(request, Mapping) else None
        read = {"concept": concept, "medication": medication, "dosage": dosages}
        key = content_key({name: part for name, part in read.items() if part is not None})
        found = self._medications.get(
            key, lambda: tuple(match_medication(self, concept, medication, request))
        )
        return list(found)

    def match(self, concept: Mapping[str, Any] | None, applies_to: str) -> list[Match]:
        """Value sets this CodeableConcept belongs to, recognised by code first, then by text.

        Text is consulted only when no coding of the concept is recognised, and only against
        value sets meant for `applies_to` (a Condition is never matched to a drug phrase).
        """
        if not isinstance(concept, Mapping):
            return []
        found: dict[str, Match] = {}
        codings = concept.get("coding")
        for coding in codings if isinstance(codings, list) else ():
            if not isinstance(coding, Mapping):
                continue
            sent, code = coding.get("system"), coding.get("code")
            if not isinstance(sent, str) or not isinstance(code, str):
                continue
            system = systems.canonical_system(sent)  # OIDs, French CIM-10, SNOMED versions...
            code = systems.bare_code(code)
            norm = normalise_code(system, code)
            ids = list(self._exact.get((system, norm), ()))
            if not ids and systems.is_french_icd10(sent):
                # A French CIM-10 extension code subdivides a WHO code (N18.50 -> N18.5).
                for end in range(len(norm) - 1, 3, -1):
                    if ids := list(self._exact.get((system, norm[:end]), ())):
                        break
            ids += [vs for prefix, vs in self._prefixes.get(system, ()) if norm.startswith(prefix)]
            for vs_id in ids:
                if self.valuesets[vs_id].applies_to == applies_to and vs_id not in found:
                    display = coding.get("display")
                    found[vs_id] = Match(
                        vs_id, "code", system, code, display if isinstance(display, str) else None
                    )
        if found:
            return list(found.values())
        texts = [concept.get("text")]
        texts += (
            [c.get("display") for c in codings if isinstance(c, Mapping)]
            if isinstance(codings, list)
            else []
        )
        haystack = " ".join(normalise_text(t) for t in texts if isinstance(t, str))
        if not haystack:
            return []
        haystack = f" {haystack} "
        for phrase, vs_id in self._phrases.get(applies_to, ()):
            if phrase in haystack and vs_id not in found:
                found[vs_id] = Match(vs_id, "text")
        return list(found.values())
