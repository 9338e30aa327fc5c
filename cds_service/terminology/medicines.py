"""Medicines recognised by what they contain (issue 11 §1).

A drug value set means "any product containing this ingredient". An order is placed in the value
sets of the ingredients its product holds, recognised in this order (the first step that places
it in a value set is recorded on the Match as ``how``; later steps may add value sets and
ingredients, never remove them):

1. ``product code`` / ``ingredient code``: a coding of MedicationRequest.medicationCodeableConcept
   found in the product lexicon (products/*.yaml: RxNorm SCD, SBD, GPCK, BPCK... with their
   composition) or in a drug value set (RxNorm IN/PIN/MIN, single-substance ATC such as A02BX02
   sucralfate). ATC combination codes (``combination_codes`` of the lexicon, e.g. A02AD01
   "ordinary salt combinations") never say which salts a product holds and are skipped: the
   product's composition (from its name or brand) decides.
2. ``ingredient``: Medication.ingredient[].itemCodeableConcept (codes, then text) or
   itemReference.display (inactive ingredients, ``isActive: false``, are skipped).
3. ``medication code``: the codes of Medication.code.
4. ``name``: the product's name (concept text, coding displays, Medication.code text), normalised
   (case, accents, punctuation), abbreviations expanded ("alum", "Al hydroxide", "mag",
   "simeth"...), cation runs distributed ("alum-mag hydroxide" -> aluminium hydroxide,
   magnesium hydroxide), then read for ingredient names ("hydroxyde d'aluminium",
   "algeldrate", "oxyde d'aluminium hydraté"...) and for the value sets' own text phrases.
5. ``brand``: brand and French proprietary names of the lexicon, each with its verified
   composition; an unknown brand stays unknown, and a brand whose products differ needs its
   formulation words (or carries a note saying so).

Local forms. A drug value set marked ``exposure: systemic`` (the rules reading it are about
systemic exposure: renal accumulation, CYP3A4 / P-gp interactions...) does not take an order
whose product is a local form (eye drops, cream, shampoo, foam, vaginal, vaccine...), unless a
product code put it there (an RxNorm SCD / SBD names its dose form, and the systemic value sets
list systemic forms only). The form is read from the data of products/forms.yaml, in this
order, the first level that says something deciding (at each level a systemic word or code wins
over a local one):

a. a vaccine: words ("vaccine", "adsorbed"...) or a coding in a vaccine system (CVX);
b. the route: MedicationRequest.dosageInstruction[].route codes (SNOMED CT, EDQM);
c. route words in the product's name, the route and form texts, the dosage text and site;
d. Medication.form codes (SNOMED CT, EDQM dose forms);
e. dose-form words ("cream", "crème", "gel"... / "tablet", "comprimé", "sachet"...). A value
   set may read a word the other way: ``systemic_forms: [gel]`` for aluminium (aluminium
   hydroxide gel is an oral antacid), ``local_forms`` for more local words.

Nothing said: the order stays in the value set (no missed warning).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cds_service.terminology import Match, normalise_code, normalise_text
from cds_service.terminology.products import (
    LOCAL_FORMS,
    LOCAL_ROUTES,
    SYSTEMIC_FORMS,
    SYSTEMIC_ROUTES,
    VACCINE,
    Lexicon,
    Product,
    load_lexicon,
    system_key,
    word_in,
)
from cds_service.terminology.systems import ATC, canonical_system

if TYPE_CHECKING:
    from cds_service.terminology import Terminology

PRODUCT_CODE = "product code"
INGREDIENT_CODE = "ingredient code"
MEDICATION_CODE = "medication code"
INGREDIENT = "ingredient"
NAME = "name"
BRAND = "brand"
HOWS = (PRODUCT_CODE, INGREDIENT_CODE, MEDICATION_CODE, INGREDIENT, NAME, BRAND)
CONNECTORS = frozenset({"and", "et", "with", "avec", "de"})
LOCAL = "local"
SYSTEMIC = "systemic"


def lexicon_for(terminology: Terminology) -> Lexicon:
    """The product lexicon (checked against the value sets when Terminology.load() runs; value
    sets it names that a hand-built Terminology lacks are ignored)."""
    return load_lexicon()


def ingredient_title(key: str, lang: str) -> str:
    """An ingredient's name in `lang` (its lexicon key when the lexicon does not know it)."""
    ing = load_lexicon().ingredients.get(key)
    return ing.title(lang) if ing else key


def expand(text: str, lexicon: Lexicon) -> str:
    """A product name normalised, its abbreviations expanded and its cation runs distributed:
    "ALUM-MAG HYDROXIDE-SIMETH" -> "aluminium hydroxide magnesium hydroxide simethicone"."""

    words = normalise_text(text).split()
    out: list[str] = []
    for i, word in enumerate(words):
        rule = lexicon.abbreviations.get(word)
        nxt = words[i + 1] if i + 1 < len(words) else ""
        nxt_rule = lexicon.abbreviations.get(nxt)
        nxt_word = nxt_rule[0] if nxt_rule and not nxt_rule[1] else nxt
        if rule and (not rule[1] or nxt in rule[1] or nxt_word in rule[1]):
            out.extend(rule[0].split())
        else:
            out.append(word)
    # Distribute a run of cations over the anion that follows it.
    result: list[str] = []
    i = 0
    while i < len(out):
        if out[i] in lexicon.cations:
            run, j = [out[i]], i + 1
            while j < len(out):
                if out[j] in lexicon.cations:
                    run.append(out[j])
                    j += 1
                elif out[j] in CONNECTORS and j + 1 < len(out) and out[j + 1] in lexicon.cations:
                    j += 1
                else:
                    break
            if len(run) > 1 and j < len(out) and out[j] in lexicon.anions:
                for cation in run:
                    result += [cation, out[j]]
                i = j + 1
                continue
        result.append(out[i])
        i += 1
    return " ".join(result)


def ingredients_in(text: str, lexicon: Lexicon) -> list[str]:
    """The lexicon ingredients named in a product name, in the order they appear."""
    pattern, keys = lexicon.ingredient_pattern()
    ordered: list[str] = []
    for m in pattern.finditer(expand(text, lexicon)):
        key = keys[m.group(0)]
        if key not in ordered:
            ordered.append(key)
    return ordered


@dataclass
class _Recognition:
    terminology: Terminology
    lexicon: Lexicon
    first: dict[str, dict[str, Any]] = field(default_factory=dict)  # value set -> how/code
    ingredients: list[str] = field(default_factory=list)
    note: tuple[tuple[str, str], ...] = ()
    product_display: str | None = None  # lexicon display of a product recognised by code
    coded: set[str] = field(default_factory=set)  # value sets a product code placed it in

    def add(
        self, valuesets: Iterable[str], how: str, *, product: bool = False, **where: Any
    ) -> None:
        for vs in sorted(valuesets):
            if vs not in self.terminology.valuesets:
                continue
            if self.terminology[vs].applies_to != "MedicationRequest":
                continue
            if product:
                self.coded.add(vs)
            if vs not in self.first:
                self.first[vs] = {"how": how, **where}

    def add_ingredients(
        self, keys: Iterable[str], how: str, *, product: bool = False, **where: Any
    ) -> None:
        keys = list(keys)
        for key in keys:
            if key not in self.ingredients:
                self.ingredients.append(key)
        self.add(self.lexicon.valuesets_of(keys), how, product=product, **where)

    # ------------------------------------------------------------------ steps

    def codes(self, concept: Any, how: str | None) -> None:
        """Step 1 (how=None: product or ingredient code), 2 (ingredient) or 3 (medication code)."""
        if not isinstance(concept, Mapping):
            return
        codings = concept.get("coding")
        for coding in codings if isinstance(codings, list) else ():
            if not isinstance(coding, Mapping):
                continue
            sent, code = coding.get("system"), coding.get("code")
            if not isinstance(sent, str) or not isinstance(code, str) or not code.strip():
                continue

            system = canonical_system(sent)
            key = (system, normalise_code(system, code))
            if key in self.lexicon.combination_codes:
                continue  # says nothing alone about the salts: the composition decides
            display = coding.get("display")
            where = {
                "system": system,
                "code": code,
                "display": display if isinstance(display, str) else None,
            }
            product = self.lexicon.by_code.get(key)
            if product is not None and not product.ambiguous:
                tty = next(
                    (c.tty for c in product.codes if (c.system, c.code) == (system, key[1])), ""
                )
                kind = INGREDIENT_CODE if tty in ("IN", "PIN", "MIN") else PRODUCT_CODE
                self.add_ingredients(
                    product.ingredients, how or kind, product=kind == PRODUCT_CODE, **where
                )
                self.product_display = self.product_display or product.display
                self.add_note(product)
            bare = {"coding": [{"system": system, "code": code}]}
            for m in self.terminology.match(bare, "MedicationRequest"):
                concept_display = self._concept_display(m.valueset, system, key[1])
                kind = self._kind(system, concept_display)
                if concept_display:
                    for ing in ingredients_in(concept_display, self.lexicon):
                        if ing not in self.ingredients:
                            self.ingredients.append(ing)
                self.add([m.valueset], how or kind, product=kind == PRODUCT_CODE, **where)

    def _concept_display(self, valueset: str, system: str, code: str) -> str | None:

        for c in self.terminology[valueset].concepts:
            if c.system == system and normalise_code(c.system, c.code) == code:
                return c.display
        return None

    @staticmethod
    def _kind(system: str, display: str | None) -> str:
        """A value set code is an ingredient code unless its display names a strength or a
        dose form (an RxNorm clinical or branded drug)."""
        if system == ATC or not display or not re.search(r"\d", display):
            return INGREDIENT_CODE
        return PRODUCT_CODE

    def names(self, text: Any, how: str) -> None:
        """Step 4 (or 2 for ingredient texts): ingredient names and value set phrases."""
        if not isinstance(text, str) or not text.strip():
            return
        self.add_ingredients(ingredients_in(text, self.lexicon), how)
        expanded = expand(text, self.lexicon)
        for m in self.terminology.match({"text": expanded}, "MedicationRequest"):
            self.add([m.valueset], how)
        for m in self.terminology.match({"text": text}, "MedicationRequest"):
            self.add([m.valueset], how)

    def brands(self, texts: Iterable[str]) -> None:
        """Step 5: brand / proprietary names with their verified composition."""

        for text in texts:
            haystack = normalise_text(text)
            if not haystack:
                continue
            by_name: dict[str, list[Product]] = {}
            for word in set(haystack.split()):
                for product in self.lexicon.by_brand_word.get(word, ()):
                    for name in product.names:
                        if word_in(name, haystack):
                            by_name.setdefault(name, []).append(product)
            for name in sorted(by_name, key=len, reverse=True):
                chosen = _choose(by_name[name], haystack)
                for product in chosen:
                    self.add_ingredients(product.ingredients, BRAND)
                    self.add_note(product)

    def add_note(self, product: Product) -> None:
        if product.note and not self.note:
            self.note = tuple(sorted((str(k), str(v)) for k, v in product.note.items()))


@dataclass(frozen=True)
class _FormEvidence:
    """What an order says about its route and dose form (see "Local forms" above)."""

    vaccine: bool
    route_codes: tuple[tuple[str, str], ...]  # (kind, normalised display)
    form_codes: tuple[tuple[str, str], ...]
    haystack: str  # the texts, normalised, joined with " # " (no phrase spans two texts)


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, Mapping):
        return []
    codings = concept.get("coding")
    out = []
    for coding in _items(codings):
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and code.strip():
            out.append((system, code))
    return out


def _form_evidence(
    lexicon: Lexicon,
    names: list[str],
    concepts: list[Any],
    medication: Mapping[str, Any] | None,
    request: Mapping[str, Any] | None,
) -> _FormEvidence:

    forms = lexicon.forms
    texts = list(names)
    form = medication.get("form") if medication is not None else None
    texts += _texts(form)
    routes: list[Any] = []
    dosages = _items(request.get("dosageInstruction")) if isinstance(request, Mapping) else []
    for dosage in dosages:
        routes.append(dosage.get("route"))
        texts += _texts(dosage.get("route")) + _texts(dosage.get("site"))
        for key in ("text", "patientInstruction"):
            if isinstance(dosage.get(key), str):
                texts.append(dosage[key])
    haystack = " # ".join(normalise_text(t) for t in texts if isinstance(t, str))
    vaccine = bool(forms.found(VACCINE, haystack)) or any(
        forms.systems.get(system_key(system)) == VACCINE
        for concept in concepts
        for system, _ in _codings(concept)
    )
    route_codes = forms.code_kinds(c for route in routes for c in _codings(route))
    return _FormEvidence(
        vaccine=vaccine,
        route_codes=tuple(route_codes),
        form_codes=tuple(forms.code_kinds(_codings(form))),
        haystack=haystack,
    )


def exposure(evidence: _FormEvidence, lexicon: Lexicon, valueset: Any) -> str | None:
    """LOCAL or SYSTEMIC, as the first level that says something decides (module docstring);
    None when nothing is said. `valueset` may read some form words the other way."""
    forms = lexicon.forms
    own_systemic = tuple(getattr(valueset, "systemic_forms", ()))
    own_local = tuple(getattr(valueset, "local_forms", ()))
    if evidence.vaccine:
        return LOCAL
    # b. coded routes (every code is classified by its own kind, wherever it was sent)
    for codes in (evidence.route_codes, evidence.form_codes):
        kinds = {kind for kind, _ in codes}
        if SYSTEMIC_ROUTES in kinds:
            return SYSTEMIC
        if LOCAL_ROUTES in kinds:
            return LOCAL
    # c. route words
    if forms.found(SYSTEMIC_ROUTES, evidence.haystack):
        return SYSTEMIC
    if forms.found(LOCAL_ROUTES, evidence.haystack):
        return LOCAL
    # d. coded dose forms
    codes = evidence.route_codes + evidence.form_codes
    if any(kind == SYSTEMIC_FORMS or display in own_systemic for kind, display in codes):
        return SYSTEMIC
    if any(kind == LOCAL_FORMS or display in own_local for kind, display in codes):
        return LOCAL
    # e. dose-form words
    if forms.found(SYSTEMIC_FORMS, evidence.haystack, own_systemic):
        return SYSTEMIC
    if forms.found(LOCAL_FORMS, evidence.haystack, own_local) - set(own_systemic):
        return LOCAL
    return None


def name_exposure(name: str, valueset: Any) -> str | None:
    """LOCAL, SYSTEMIC or None for a product name alone (e.g. a code's display)."""

    evidence = _FormEvidence(False, (), (), normalise_text(name))
    return exposure(evidence, load_lexicon(), valueset)


def _choose(entries: list[Product], haystack: str) -> list[Product]:
    """The entries of one brand name that fit this product name; [] when the best fit is
    ambiguous (products of that brand differ: never guess)."""
    scored: list[tuple[int, Product]] = []
    for entry in entries:
        if any(word_in(w, haystack) for w in entry.excludes):
            continue
        if entry.requires:
            if any(word_in(w, haystack) for w in entry.requires):
                scored.append((1, entry))
        else:
            scored.append((0, entry))
    if not scored:
        return []
    best = max(score for score, _ in scored)
    chosen = [entry for score, entry in scored if score == best]
    if any(entry.ambiguous for entry in chosen):
        return []
    return chosen


def _texts(concept: Any) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    texts = [concept.get("text")]
    codings = concept.get("coding")
    texts += (
        [c.get("display") for c in codings if isinstance(c, Mapping)]
        if isinstance(codings, list)
        else []
    )
    out: list[str] = []
    for t in texts:
        if isinstance(t, str) and t.strip() and t.strip() not in out:
            out.append(t.strip())
    return out


def match_medication(
    terminology: Terminology,
    concept: Mapping[str, Any] | None,
    medication: Mapping[str, Any] | None,
    request: Mapping[str, Any] | None = None,
) -> list[Match]:
    """Drug value sets of an order's product, recognised in the documented order; `request`
    (the MedicationRequest) gives the routes of its dosage instructions."""

    lexicon = lexicon_for(terminology)
    rec = _Recognition(terminology, lexicon)
    med = medication if isinstance(medication, Mapping) else None
    med_code = med.get("code") if med is not None else None
    med_code = med_code if isinstance(med_code, Mapping) else None
    if not isinstance(concept, Mapping):
        concept = None
    if concept is not None and med_code is not None and concept == med_code:
        concept = None  # the caller passed Medication.code as the concept: step 3, not 1

    rec.codes(concept, None)  # 1
    for ingredient in _items(med.get("ingredient") if med else None):  # 2
        if ingredient.get("isActive") is False:
            continue
        item = ingredient.get("itemCodeableConcept")
        if isinstance(item, Mapping):
            rec.codes(item, INGREDIENT)
            for text in _texts(item):
                rec.names(text, INGREDIENT)
        ref = ingredient.get("itemReference")
        if isinstance(ref, Mapping):
            rec.names(ref.get("display"), INGREDIENT)
    rec.codes(med_code, MEDICATION_CODE)  # 3
    texts = _texts(concept) + [t for t in _texts(med_code) if t not in _texts(concept)]
    for text in texts:  # 4
        rec.names(text, NAME)
    rec.brands(texts)  # 5

    if not rec.first:
        return []
    _drop_local_forms(rec, texts, [concept, med_code], med, request)
    if not rec.first:
        return []
    product = texts[0] if texts else None
    ingredients = tuple(rec.ingredients)
    matches = []
    for vs, where in rec.first.items():
        how = where["how"]
        salts = tuple(k for k in ingredients if vs in lexicon.valuesets_of([k]))
        matches.append(
            Match(
                valueset=vs,
                by="code" if where.get("code") else "text",
                system=where.get("system"),
                code=where.get("code"),
                display=where.get("display"),
                how=how,
                product=product,
                ingredients=ingredients,
                salts=salts,
                note=rec.note,
                known_as=rec.product_display,
            )
        )
    return matches


def _drop_local_forms(
    rec: _Recognition,
    texts: list[str],
    concepts: list[Any],
    medication: Mapping[str, Any] | None,
    request: Mapping[str, Any] | None,
) -> None:
    """Leave out the systemic value sets an order in a local form was placed in by anything but
    a product code."""
    systemic = [
        vs for vs in rec.first if rec.terminology[vs].exposure == "systemic" and vs not in rec.coded
    ]
    if not systemic:
        return
    ingredients = medication.get("ingredient") if medication is not None else None
    items = [i.get("itemCodeableConcept") for i in _items(ingredients)]
    texts = texts + [t for item in items for t in _texts(item)]
    evidence = _form_evidence(rec.lexicon, texts, concepts + items, medication, request)
    for vs in systemic:
        if exposure(evidence, rec.lexicon, rec.terminology[vs]) == LOCAL:
            del rec.first[vs]


def _items(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        value = [value]  # a single object where R4 wants a list (seen from real clients)
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
