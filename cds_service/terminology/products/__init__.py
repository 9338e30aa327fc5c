"""The product lexicon: which ingredients a medicine holds, kept as data (issue 11 §1).

A drug value set (``valuesets/<id>.yaml``) means "any product containing this ingredient". The
value sets hold ingredient codes (RxNorm IN/PIN/MIN, single-substance ATC) and may hold product
codes; this lexicon says what a product *contains*, so that a product recognised by its code, its
name or its brand is placed in the value sets of its ingredients, and a card can name the
product and the salt it holds. Every file of this folder is read at start-up; all files share one
namespace of ingredients. A malformed file raises ``TerminologyError`` at start-up.

File format (``products/<group>.yaml``; the same text is in /tmp/plan/lexicon-format.md)::

    group: colchicine                 # = the file name without .yaml
    description: >                    # one or two sentences
      Colchicine products (US and France).

    abbreviations:                    # optional; whole words of a normalised name (lower case, no
      - {word: alum, means: aluminium}        # accents, punctuation -> spaces); `means` may be
      - {word: al, means: aluminium,          # several words; `only_before`: only when the next
         only_before: [hydroxide, phosphate]} # word is one of these ("Al hydroxide", not "AL")

    cations: [aluminium, magnesium]   # optional: "aluminium magnesium hydroxide" and "aluminium and
    anions: [hydroxide, carbonate]    # magnesium hydroxide" are read as "aluminium hydroxide
                                      # magnesium hydroxide" (a run of cations before one anion)

    combination_codes:                # optional: codes that never say alone which substances a
      - {system: "http://www.whocc.no/atc", code: A02AD01, display: ordinary salt combinations,
         source: "..."}               # product holds; ignored when recognising by code (the
                                      # product's composition, from its name or brand, decides)

    ingredients:                      # key = English name shown on cards (lower case, British)
      colchicine:
        fr: colchicine                # French name shown on French cards (required)
        names: [colchicine]           # spellings recognised in product names (normalised, whole
                                      # words); the key and `fr` are always recognised
        valuesets: [colchicine]       # drug value sets this ingredient puts a product in ([] ok)
        source: "..."                 # where the ingredient and its names were checked (required)
      tiemonium:                      # a co-ingredient with no value set: list it for the card
        fr: tiémonium
        valuesets: []
        source: "..."
      # The same key may appear in several files: names and value sets are merged (union);
      # `fr` must then be identical.

    products:                         # each: one product (family), VERIFIED composition
      - names: [COLCRYS]              # brand / proprietary names, whole words of the normalised
                                      # product name -> Match.how = "brand"
        requires: [tablet, tab]       # optional: at least one of these words/phrases must also be
                                      # in the name (formulation words, when other products of the
                                      # brand hold something else)
        excludes: [chewable]          # optional: the entry does not apply if one of these is there
        country: US                   # US | FR | ... (informative)
        ingredients: [colchicine]     # keys of `ingredients` (any file); required, non-empty
        note: {en: "...", fr: "..."}  # optional caveat shown on the card (e.g. a brand that also
                                      # covers products of another composition)
        source: "DailyMed setid ... / ANSM BDPM CIS ..., seen 2026-12-01"   # required
        codes:                        # optional: product codes -> Match.how = "product code"
          - {system: "http://www.nlm.nih.gov/research/umls/rxnorm", code: "<rxcui>", tty: SCD,
             display: "<RxNorm name>", source: "..."}
                                      # tty (optional, only when verified): IN/PIN/MIN ->
                                      # "ingredient code"; other or none -> "product code"
      - display: "<RxNorm name>"      # a product known by code only: `display`
        ingredients: [colchicine]     # instead of `names`
        codes: [...]
        source: "..."

    ambiguous:                        # optional: brand names (+ formulation words) whose products
      - names: [MYLANTA]              # do not all hold the same substances. When the best-fitting
        requires: [classic, supreme]  # entry for a name is here, the product is NOT recognised by
        country: US                   # brand (never guess a composition); its name and codes may
        note: "..."                   # still recognise it.
        source: "..."

Choosing among entries of one brand name: an entry whose `requires` matched beats one without
`requires`; among the best, any `ambiguous` entry makes the brand unrecognised.

Routes and dose forms (section ``forms``, kept in ``forms.yaml``; any file may hold it, kinds
are merged). They tell a local product (eye drops, cream, shampoo, vaccine...) from a systemic
one, for the drug value sets marked ``exposure: systemic`` (see medicines.py)::

    forms:
      vaccine:                        # decides first: a vaccine (adsorbed, adjuvant...)
        words: [vaccine, vaccin, adsorbed]
        systems:                      # any coding of the product in one of these systems
          - {system: "http://hl7.org/fhir/sid/cvx", display: CVX, source: "..."}
      local_routes:                   # then routes: dosageInstruction[].route codes, then words
        words: [ophthalmic, collyre, topical, cutanee, vaginal, otic]
        codes:                        # (product name, route and form texts, dosage text)
          - {system: "http://snomed.info/sct", code: "54485002", display: Ophthalmic route,
             source: "..."}
      systemic_routes: {words: [oral, po, buvable, iv, injection], codes: [...]}
      local_forms: {words: [cream, creme, ointment, pommade, gel, foam, shampoo], codes: [...]}
      systemic_forms: {words: [tablet, comprime, capsule, gelule, sachet], codes: [...]}
                                      # then dose forms: Medication.form codes, then words

Words are whole words of the normalised text; at each level a systemic word or code wins over a
local one (safety first). A code may be listed once, under one kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.terminology import (
    SYSTEM_LABELS,
    YAML_LOADER,
    TerminologyError,
    normalise_code,
    normalise_text,
)
from cds_service.terminology.systems import canonical_system

PRODUCT_DIR = Path(__file__).resolve().parent
TTYS = frozenset(
    {"IN", "PIN", "MIN", "SCD", "SBD", "GPCK", "BPCK", "SCDF", "SBDF", "SCDG", "SBDG", "SCDC"}
)
INGREDIENT_TTYS = frozenset({"IN", "PIN", "MIN"})
VACCINE, LOCAL_ROUTES, SYSTEMIC_ROUTES, LOCAL_FORMS, SYSTEMIC_FORMS = (
    "vaccine",
    "local_routes",
    "systemic_routes",
    "local_forms",
    "systemic_forms",
)
FORM_KINDS = (VACCINE, LOCAL_ROUTES, SYSTEMIC_ROUTES, LOCAL_FORMS, SYSTEMIC_FORMS)


@dataclass(frozen=True)
class Ingredient:
    key: str  # English display name
    fr: str
    names: tuple[str, ...]  # normalised spellings, longest first
    valuesets: frozenset[str]
    source: str

    def title(self, lang: str) -> str:
        return self.fr if lang == "fr" else self.key


@dataclass(frozen=True)
class ProductCode:
    system: str
    code: str
    tty: str
    display: str
    source: str


@dataclass(frozen=True)
class Product:
    group: str
    names: tuple[str, ...]  # normalised brand names (empty for a code-only product)
    display: str  # how the product is called (first brand name, or `display`)
    ingredients: tuple[str, ...]
    source: str
    requires: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    country: str | None = None
    note: Mapping[str, str] | None = None
    codes: tuple[ProductCode, ...] = ()
    ambiguous: bool = False


def system_key(system: str) -> str:
    """A code system as the route/form index holds it: canonical (OIDs and version URIs mapped,
    see systems.py), without scheme or trailing slash, lower case ("https://standardterms.edqm.eu/"
    == "http://standardterms.edqm.eu")."""
    key = canonical_system(system.strip()).lower()
    return re.sub(r"^https?://", "", key).rstrip("/#")


@dataclass
class Forms:
    """Routes and dose forms (section ``forms``): words by kind, codes and systems to kinds."""

    words: dict[str, frozenset[str]] = field(
        default_factory=lambda: dict.fromkeys(FORM_KINDS, frozenset())
    )
    # (system key, code) -> (kind, normalised display)
    codes: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    systems: dict[str, str] = field(default_factory=dict)  # system key -> kind

    def found(self, kind: str, haystack: str, extra: Iterable[str] = ()) -> frozenset[str]:
        """The words of `kind` (and `extra`) that occur as whole words in `haystack` (normalised:
        single spaces, so a padded substring test is a whole-word test)."""
        padded = f" {haystack} "
        return frozenset(w for w in (*self.words[kind], *extra) if f" {w} " in padded)

    def code_kinds(self, codings: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """(kind, normalised display) of the known route / form codes among `codings`."""
        out = []
        for system, code in codings:
            hit = self.codes.get((system_key(system), normalise_code(system, code)))
            if hit is not None:
                out.append(hit)
        return out


@dataclass
class Lexicon:
    """All product files, indexed once."""

    ingredients: dict[str, Ingredient] = field(default_factory=dict)
    products: list[Product] = field(default_factory=list)
    abbreviations: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    cations: frozenset[str] = frozenset()
    anions: frozenset[str] = frozenset()
    combination_codes: frozenset[tuple[str, str]] = frozenset()
    by_code: dict[tuple[str, str], Product] = field(default_factory=dict)
    by_brand_word: dict[str, list[Product]] = field(default_factory=dict)
    forms: Forms = field(default_factory=Forms)
    _pattern: tuple[re.Pattern[str], dict[str, str]] | None = field(default=None, repr=False)

    def ingredient_names(self) -> list[tuple[str, str]]:
        """(normalised name, ingredient key), longest names first."""
        pairs = [(n, i.key) for i in self.ingredients.values() for n in i.names]
        return sorted(pairs, key=lambda p: (-len(p[0]), p[0]))

    def ingredient_pattern(self) -> tuple[re.Pattern[str], dict[str, str]]:
        """One regular expression for every ingredient name (longest first, so that at each
        position the longest name wins), and name -> ingredient key. Built once."""
        if self._pattern is None:
            pairs = self.ingredient_names()
            alternation = "|".join(re.escape(name) for name, _ in pairs) or "(?!x)x"
            self._pattern = (
                re.compile(rf"(?<![0-9a-z])(?:{alternation})(?![0-9a-z])"),
                dict(pairs),
            )
        return self._pattern

    def valuesets_of(self, ingredients: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for key in ingredients:
            if key in self.ingredients:
                out |= self.ingredients[key].valuesets
        return frozenset(out)

    def check(self, valuesets: Mapping[str, Any]) -> None:
        """Every value set an ingredient names exists and is a drug value set."""
        for ing in self.ingredients.values():
            for vs in ing.valuesets:
                if vs not in valuesets:
                    raise TerminologyError(f"ingredient {ing.key!r}: unknown value set {vs!r}")
                if getattr(valuesets[vs], "applies_to", None) != "MedicationRequest":
                    raise TerminologyError(f"ingredient {ing.key!r}: {vs!r} is not a drug set")


def _words(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TerminologyError(f"{where}: expected a list of non-empty strings")
    return tuple(normalise_text(v) for v in value)


def _code(entry: Any, where: str) -> ProductCode:
    if not isinstance(entry, Mapping):
        raise TerminologyError(f"{where}: a code must be a mapping")
    for key in ("system", "code", "display", "source"):
        if not entry.get(key):
            raise TerminologyError(f"{where}: code has no {key!r}")
    if entry["system"] not in SYSTEM_LABELS:
        raise TerminologyError(f"{where}: unknown system {entry['system']}")
    if entry.get("tty") is not None and entry["tty"] not in TTYS:
        raise TerminologyError(f"{where}: unknown RxNorm tty {entry['tty']!r}")
    return ProductCode(
        system=entry["system"],
        code=str(entry["code"]),
        tty=str(entry.get("tty") or ""),
        display=str(entry["display"]),
        source=str(entry["source"]),
    )


def _load_file(path: Path, lexicon: Lexicon, pending: list[tuple[str, Product]]) -> None:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506
    except yaml.YAMLError as exc:
        raise TerminologyError(f"products/{path.name}: not valid YAML: {exc}") from exc
    where = f"products/{path.name}"
    if not isinstance(data, Mapping):
        raise TerminologyError(f"{where}: expected a mapping")
    if data.get("group") != path.stem:
        raise TerminologyError(f"{where}: group must equal the file name")
    for i, ab in enumerate(data.get("abbreviations") or []):
        if not isinstance(ab, Mapping) or not ab.get("word") or not ab.get("means"):
            raise TerminologyError(f"{where}: abbreviations[{i}] needs word and means")
        word = normalise_text(str(ab["word"]))
        value = (
            normalise_text(str(ab["means"])),
            frozenset(_words(ab.get("only_before"), f"{where}: abbreviations[{i}]")),
        )
        if lexicon.abbreviations.get(word, value) != value:
            raise TerminologyError(f"{where}: abbreviation {word!r} defined twice differently")
        lexicon.abbreviations[word] = value
    lexicon.cations |= frozenset(_words(data.get("cations"), f"{where}: cations"))
    lexicon.anions |= frozenset(_words(data.get("anions"), f"{where}: anions"))
    combos = set(lexicon.combination_codes)
    for i, entry in enumerate(data.get("combination_codes") or []):
        if not isinstance(entry, Mapping) or not all(
            entry.get(k) for k in ("system", "code", "display", "source")
        ):
            raise TerminologyError(f"{where}: combination_codes[{i}] needs system/code/source")
        combos.add((entry["system"], normalise_code(entry["system"], str(entry["code"]))))
    lexicon.combination_codes = frozenset(combos)
    for key, ing in (data.get("ingredients") or {}).items():
        at = f"{where}: ingredient {key!r}"
        if not isinstance(ing, Mapping) or not ing.get("fr") or not ing.get("source"):
            raise TerminologyError(f"{at}: needs fr and source")
        if not isinstance(ing.get("valuesets", []), list):
            raise TerminologyError(f"{at}: valuesets must be a list")
        names = {normalise_text(key), normalise_text(ing["fr"]), *_words(ing.get("names"), at)}
        known = lexicon.ingredients.get(key)
        if known is not None:
            if known.fr != ing["fr"]:
                raise TerminologyError(f"{at}: French name differs from another file")
            names |= set(known.names)
        lexicon.ingredients[key] = Ingredient(
            key=key,
            fr=ing["fr"],
            names=tuple(sorted(names, key=lambda n: (-len(n), n))),
            valuesets=frozenset(ing.get("valuesets") or [])
            | (known.valuesets if known else frozenset()),
            source=ing["source"] if known is None else f"{known.source}; {ing['source']}",
        )
    _load_forms(data.get("forms"), where, lexicon.forms)
    for section, ambiguous in (("products", False), ("ambiguous", True)):
        for i, entry in enumerate(data.get(section) or []):
            at = f"{where}: {section}[{i}]"
            if not isinstance(entry, Mapping) or not entry.get("source"):
                raise TerminologyError(f"{at}: needs a source")
            names = _words(entry.get("names"), at)
            codes = tuple(_code(c, f"{at}.codes") for c in entry.get("codes") or [])
            if not names and not (entry.get("display") and codes):
                raise TerminologyError(f"{at}: needs names, or display and codes")
            ingredients = tuple(entry.get("ingredients") or [])
            if not ambiguous and not ingredients:
                raise TerminologyError(f"{at}: needs its ingredients")
            note = entry.get("note")
            if (
                not ambiguous
                and note is not None
                and not (isinstance(note, Mapping) and note.get("en") and note.get("fr"))
            ):
                raise TerminologyError(f"{at}: note needs en and fr")
            product = Product(
                group=path.stem,
                names=names,
                display=str(entry.get("display") or entry["names"][0]),
                ingredients=ingredients,
                source=str(entry["source"]),
                requires=_words(entry.get("requires"), at),
                excludes=_words(entry.get("excludes"), at),
                country=entry.get("country"),
                note=note if isinstance(note, Mapping) else None,
                codes=codes,
                ambiguous=ambiguous,
            )
            pending.append((at, product))


def _load_forms(section: Any, where: str, forms: Forms) -> None:
    if section is None:
        return
    if not isinstance(section, Mapping):
        raise TerminologyError(f"{where}: forms must be a mapping of kinds")
    for kind, spec in section.items():
        at = f"{where}: forms.{kind}"
        if kind not in FORM_KINDS:
            raise TerminologyError(f"{at}: unknown kind (expected one of {', '.join(FORM_KINDS)})")
        if not isinstance(spec, Mapping):
            raise TerminologyError(f"{at}: expected a mapping (words, codes, systems)")
        forms.words[kind] = forms.words[kind] | frozenset(_words(spec.get("words"), at))
        for i, entry in enumerate(spec.get("codes") or []):
            if not isinstance(entry, Mapping) or not all(
                entry.get(k) for k in ("system", "code", "display", "source")
            ):
                raise TerminologyError(f"{at}.codes[{i}]: needs system, code, display, source")
            system = str(entry["system"])
            key = (system_key(system), normalise_code(system, str(entry["code"])))
            value = (kind, normalise_text(str(entry["display"])))
            if key in forms.codes and forms.codes[key][0] != kind:
                raise TerminologyError(f"{at}.codes[{i}]: code {entry['code']} has two kinds")
            forms.codes[key] = value
        for i, entry in enumerate(spec.get("systems") or []):
            if not isinstance(entry, Mapping) or not entry.get("system") or not entry.get("source"):
                raise TerminologyError(f"{at}.systems[{i}]: needs system and source")
            forms.systems[system_key(str(entry["system"]))] = kind


@cache
def load_lexicon(directory: Path = PRODUCT_DIR) -> Lexicon:
    """Every product file of `directory` (read once per process; treat as read-only)."""
    lexicon = Lexicon()
    pending: list[tuple[str, Product]] = []
    for path in sorted(directory.glob("*.yaml")):
        _load_file(path, lexicon, pending)
    seen: dict[tuple[str, ...], str] = {}
    for at, product in pending:
        for key in product.ingredients:
            if key not in lexicon.ingredients:
                raise TerminologyError(f"{at}: unknown ingredient {key!r}")
        for name in product.names:
            ident = (name, *sorted(product.requires), "|", *sorted(product.excludes))
            if ident in seen:
                raise TerminologyError(f"{at}: {name!r} with the same words as {seen[ident]}")
            seen[ident] = at
            first = name.split()[0]
            lexicon.by_brand_word.setdefault(first, []).append(product)
        for code in product.codes:
            key = (code.system, normalise_code(code.system, code.code))
            if key in lexicon.by_code:
                raise TerminologyError(f"{at}: code {code.code} listed twice")
            lexicon.by_code[key] = product
        lexicon.products.append(product)
    return lexicon


def word_in(phrase: str, haystack: str) -> bool:
    """`phrase` occurs as whole words in `haystack` (both normalised)."""
    return re.search(rf"(?<![0-9a-z]){re.escape(phrase)}(?![0-9a-z])", haystack) is not None
