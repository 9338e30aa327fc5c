"""Medicines recognised by what they contain (issue 11 §1): Terminology.match_medication, the
product lexicon (terminology/products/), and how the aluminium card names the product."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from cds_service.settings import DEFAULT_CARDS_DIR
from cds_service.terminology import ATC, RXNORM, SNOMED, Terminology, TerminologyError
from cds_service.terminology.medicines import HOWS, expand, ingredients_in
from cds_service.terminology.products import PRODUCT_DIR, load_lexicon
from tests.conftest import ROOT, SERVICES, assert_valid_response, load_request

TERMINOLOGY = Terminology.load()
LEXICON = load_lexicon()
AL = "aluminium-hydroxide"
EPIC_LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288"  # an Epic-style local medication OID


def med(concept: dict[str, Any] | None = None, medication: dict[str, Any] | None = None) -> Any:
    return TERMINOLOGY.match_medication(concept, medication)


def aluminium(
    concept: dict[str, Any] | None = None, medication: dict[str, Any] | None = None
) -> Any:
    """The aluminium match of a product, or None."""
    return next((m for m in med(concept, medication) if m.valueset == AL), None)


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def rxnorm(code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": RXNORM, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


# ------------------------------------------------------------------ 1. coded product / ingredient


def test_rxnorm_ingredient_code_without_display() -> None:
    m = aluminium(rxnorm("612"))
    assert (m.how, m.by, m.code, m.ingredients) == (
        "ingredient code",
        "code",
        "612",
        ("aluminium hydroxide",),
    )
    assert m.product is None


def test_rxnorm_product_code_without_display_names_its_composition() -> None:
    m = aluminium(rxnorm("307746"))
    assert m.how == "product code"
    assert m.ingredients == ("aluminium hydroxide", "magnesium hydroxide", "simethicone")
    assert m.salts == ("aluminium hydroxide",)
    assert m.known_as
    assert "40 mg/mL" in m.known_as


def test_sandbox_product_code_with_its_display() -> None:
    m = aluminium(rxnorm("243449", "Aluminum Hydroxide 500 MG Oral Tablet"))
    assert (m.how, m.code, m.product) == (
        "product code",
        "243449",
        "Aluminum Hydroxide 500 MG Oral Tablet",
    )
    # ... and the same product is recognised by its name alone under an unknown code.
    assert aluminium(rxnorm("99999999", "Aluminum Hydroxide 500 MG Oral Tablet")).how == "name"


@pytest.mark.parametrize(
    ("code", "salt"),
    [
        ("314234", "sucralfate"),  # Sucralfate 1000 MG Oral Tablet
        ("10156", "sucralfate"),  # RxNorm IN
        ("308072", "aluminium hydroxide"),  # + magnesium carbonate chewable
        ("311410", "magaldrate"),  # Sandbox list
        ("308065", "basic aluminium carbonate"),  # Sandbox list
    ],
)
def test_aluminium_containing_rxnorm_codes(code: str, salt: str) -> None:
    m = aluminium(rxnorm(code))
    assert m is not None
    assert m.by == "code"
    assert salt in m.salts


@pytest.mark.parametrize(
    ("code", "salt"),
    [
        ("A02BX02", "sucralfate"),
        ("A02AB01", "aluminium hydroxide"),
        ("A02AB03", "aluminium phosphate"),
    ],
)
def test_atc_single_substance_codes(code: str, salt: str) -> None:
    m = aluminium({"coding": [{"system": ATC, "code": code}]})
    assert (m.how, m.code) == ("ingredient code", code)


def test_atc_combination_code_never_decides_alone() -> None:
    combo = {"system": ATC, "code": "A02AD01", "display": "ordinary salt combinations"}
    assert med({"coding": [combo]}) == []
    with_name = aluminium({"coding": [combo], "text": "MAALOX, suspension buvable"})
    assert with_name.how == "brand"
    assert with_name.ingredients == ("aluminium hydroxide", "magnesium hydroxide")


def test_rxnorm_under_its_oid_is_rxnorm() -> None:
    m = aluminium({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "612"}]})
    assert m is not None
    assert m.how == "ingredient code"


# ------------------------------------------------------------------ 2-3. Medication resource


def test_medication_ingredient_code_and_reference() -> None:
    by_code = {
        "resourceType": "Medication",
        "ingredient": [
            {"itemCodeableConcept": rxnorm("612"), "isActive": True},
            {"itemCodeableConcept": text("Magnesium hydroxide")},
        ],
    }
    m = aluminium(None, by_code)
    assert (m.how, m.code) == ("ingredient", "612")
    assert m.ingredients == ("aluminium hydroxide", "magnesium hydroxide")
    by_reference = {
        "resourceType": "Medication",
        "ingredient": [{"itemReference": {"reference": "Substance/x", "display": "Sucralfate"}}],
    }
    assert aluminium(None, by_reference).how == "ingredient"


def test_inactive_ingredients_are_not_what_the_product_holds() -> None:
    excipient = {
        "resourceType": "Medication",
        "ingredient": [{"itemCodeableConcept": text("aluminium hydroxide"), "isActive": False}],
    }
    assert aluminium(None, excipient) is None


def test_medication_code() -> None:
    medication = {"resourceType": "Medication", "code": rxnorm("314234")}
    m = aluminium(None, medication)
    assert (m.how, m.code) == ("medication code", "314234")
    # The lead passes Medication.code as the concept too: it stays a Medication code.
    assert aluminium(medication["code"], medication).how == "medication code"


def test_medication_code_text_is_read_as_a_name() -> None:
    medication = {"resourceType": "Medication", "code": text("ROCGEL 1,2 g, suspension buvable")}
    m = aluminium(None, medication)
    assert (m.how, m.product, m.ingredients) == (
        "brand",
        "ROCGEL 1,2 g, suspension buvable",
        ("hydrated aluminium oxide",),
    )


def test_recognition_order_is_recorded() -> None:
    coded_and_named = rxnorm("307746", "Maalox liquid")
    assert aluminium(coded_and_named).how == "product code"
    assert aluminium(text("Maalox liquid")).how == "brand"


# ------------------------------------------------------------------ 4. names


@pytest.mark.parametrize(
    ("name", "ingredients"),
    [
        (
            "ALUM-MAG HYDROXIDE-SIMETH 200-200-20 MG/5 ML PO SUSP",
            ("aluminium hydroxide", "magnesium hydroxide", "simethicone"),
        ),
        (
            "Al hydroxide/Mg hydroxide/simethicone",
            ("aluminium hydroxide", "magnesium hydroxide", "simethicone"),
        ),
        (
            "Aluminum and Magnesium Hydroxide with Simethicone",
            ("aluminium hydroxide", "magnesium hydroxide", "simethicone"),
        ),
        ("HYDROXYDE D'ALUMINIUM 500 mg", ("aluminium hydroxide",)),
        ("oxyde d'aluminium hydraté", ("hydrated aluminium oxide",)),
        ("Algeldrate", ("aluminium hydroxide",)),
        (
            "ALUM HYDROX-MAG CARB 160-105 MG CHEW TAB",
            ("aluminium hydroxide", "magnesium carbonate"),
        ),
        ("Al(OH)3 gel", ("aluminium hydroxide",)),
        ("hydroxyde d'Al 500 mg", ("aluminium hydroxide",)),
        ("Talcid (hydrotalcite) 500 mg", ("hydrotalcite",)),
        ("alum hydrox 320 mg/5 mL", ("aluminium hydroxide",)),
        ("phosphate d'aluminium colloïdal", ("aluminium phosphate",)),
        ("SUCRALFATE 1 G TAB", ("sucralfate",)),
        (
            "Alumina, Magnesia, and Simethicone Oral Suspension",
            ("aluminium hydroxide", "magnesium hydroxide", "simethicone"),
        ),
        ("magaldrate 540 MG / Simethicone 20 MG Chewable Tablet", ("magaldrate", "simethicone")),
    ],
)
def test_product_names(name: str, ingredients: tuple[str, ...]) -> None:
    m = aluminium({"coding": [{"system": EPIC_LOCAL, "code": "12345", "display": name}]})
    assert (m.how, m.ingredients) == ("name", ingredients)
    assert m.product == name


@pytest.mark.parametrize(
    "name",
    [
        "aluminium-free antacid",
        "AL 500 mg tablet",  # "Al" is aluminium only before a salt word
        "calcium carbonate 500 mg",
        "Magnesium hydroxide 400 mg/5 mL",
    ],
)
def test_names_without_aluminium(name: str) -> None:
    assert aluminium(text(name)) is None


def test_abbreviations_and_cation_runs() -> None:
    assert expand("ALUM-MAG HYDROXIDE", LEXICON) == "aluminium hydroxide magnesium hydroxide"
    assert expand("Mg 200 mg", LEXICON) == "mg 200 mg"  # milligrams stay milligrams
    assert ingredients_in("Mg hydroxide", LEXICON) == ["magnesium hydroxide"]


# ------------------------------------------------------------------ 5. brands


@pytest.mark.parametrize(
    ("name", "salts", "with_note"),
    [
        ("MAALOX, suspension buvable", ("aluminium hydroxide",), False),
        ("Maalox", ("aluminium hydroxide",), True),
        ("Maalox liquid", ("aluminium hydroxide",), False),
        ("MAALOX MAUX D'ESTOMAC, comprimé à croquer", ("aluminium hydroxide",), False),
        ("Mylanta", ("aluminium hydroxide",), True),
        ("Mylanta Maximum Strength", ("aluminium hydroxide",), True),
        ("AlternaGEL", ("aluminium hydroxide",), False),
        ("XOLAAM, suspension buvable en flacon", ("aluminium hydroxide",), False),
        ("ROCGEL 1,2 g", ("hydrated aluminium oxide",), False),
        ("GELOX, suspension buvable en sachet", ("aluminium hydroxide",), False),
        ("PHOSPHALUGEL", ("aluminium phosphate",), False),
        ("Carafate 1 g tablet", ("sucralfate",), False),
        ("ULCAR 1 g", ("sucralfate",), False),
        ("Kéal 2 g, suspension buvable", ("sucralfate",), False),
        ("Gaviscon Extra Strength chewable tablet", ("aluminium hydroxide",), True),
        ("GAVISCON REGULAR STRENGTH LIQUID", ("aluminium hydroxide",), True),
    ],
)
def test_brands(name: str, salts: tuple[str, ...], with_note: bool) -> None:
    m = aluminium(text(name))
    assert (m.how, m.by, m.salts) == ("brand", "text", salts)
    assert bool(m.note) is with_note
    if with_note:
        assert dict(m.note).keys() == {"en", "fr"}


@pytest.mark.parametrize(
    "name",
    [
        "Zorblax",  # unknown brand: stays unknown
        "Mylanta Classic",  # calcium carbonate, no aluminium (openFDA NDC 62372-501)
        "Maalox chewable tablets",  # US chewables: calcium carbonate
        "Mylanta Gas",  # simethicone only
        "GAVISCON, suspension buvable en flacon",  # French Gaviscon: an alginate, no aluminium
        "Gaviscon",  # which Gaviscon is not said: the US and French products differ
    ],
)
def test_brands_that_are_not_known_to_hold_aluminium(name: str) -> None:
    assert aluminium(text(name)) is None


def test_other_drugs_and_conditions_keep_their_behaviour() -> None:
    colchicine = med(rxnorm("2683"))
    assert [m.valueset for m in colchicine] == ["colchicine"]
    assert TERMINOLOGY.match(rxnorm("612"), "Condition") == []
    assert [m.valueset for m in TERMINOLOGY.match(rxnorm("612"), "MedicationRequest")] == [AL]


# ------------------------------------------------------------------ the lexicon as data


def test_every_product_file_loads_and_names_known_ingredients_and_sources() -> None:
    assert sorted(p.stem for p in PRODUCT_DIR.glob("*.yaml"))  # at least aluminium.yaml
    for product in LEXICON.products:
        assert product.source, product.display
        assert all(key in LEXICON.ingredients for key in product.ingredients)
        assert all(code.source for code in product.codes)
    for ingredient in LEXICON.ingredients.values():
        assert ingredient.source
        assert ingredient.fr
        assert all(vs in TERMINOLOGY.valuesets for vs in ingredient.valuesets)


def test_every_aluminium_product_of_the_lexicon_is_in_the_aluminium_value_set() -> None:
    for product in LEXICON.products:
        if product.group != "aluminium" or product.ambiguous:
            continue
        holds_aluminium = AL in LEXICON.valuesets_of(product.ingredients)
        assert holds_aluminium, product.display
        for code in product.codes:
            assert aluminium({"coding": [{"system": code.system, "code": code.code}]}), code.code


def test_malformed_product_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "group: bad\ndescription: x\nproducts:\n  - names: [FOO]\n    ingredients: [nothing]\n"
        "    source: x\n",
        encoding="utf-8",
    )
    with pytest.raises(TerminologyError, match="unknown ingredient"):
        load_lexicon(tmp_path)
    (tmp_path / "bad.yaml").write_text(
        "group: bad\ndescription: x\nproducts:\n  - names: [FOO]\n    ingredients: [x]\n",
        encoding="utf-8",
    )
    with pytest.raises(TerminologyError, match="source"):
        load_lexicon(tmp_path)


def test_hows_are_all_phrased_on_cards() -> None:
    common = yaml.safe_load((DEFAULT_CARDS_DIR / "_common.yaml").read_text(encoding="utf-8"))
    assert set(common["recognised_by"]) == set(HOWS)
    for phrase in common["recognised_by"].values():
        assert set(phrase) == {"en", "fr"}


# ------------------------------------------------------------------ over HTTP, on the card

EPIC_NAME = "ALUM-MAG HYDROXIDE-SIMETH 200-200-20 MG/5 ML PO SUSP"
AL_MG = "aluminium hydroxide, magnesium hydroxide"
AL_MG_FR = "hydroxyde d'aluminium, hydroxyde de magnésium"
CARD_CASES = [
    # (medicationCodeableConcept, words the English detail must hold, words of the French one)
    (
        {"text": "MAALOX, suspension buvable"},
        [f"MAALOX, suspension buvable ({AL_MG}; recognised by brand name)"],
        [f"MAALOX, suspension buvable ({AL_MG_FR} ; reconnu par son nom de marque)"],
    ),
    (
        rxnorm("307746"),
        [f"({AL_MG}, simethicone; recognised by its product code, RxNorm 307746)"],
        ["reconnu par son code produit, RxNorm 307746"],
    ),
    (
        {"coding": [{"system": EPIC_LOCAL, "code": "12345", "display": EPIC_NAME}]},
        [f"{EPIC_NAME} ({AL_MG}, simethicone; recognised by its name)"],
        [f"{EPIC_NAME} ({AL_MG_FR}, siméticone ; reconnu par son libellé)"],
    ),
    (
        {"text": "Maalox"},
        ["recognised by brand name", "calcium carbonate and no aluminium"],
        ["reconnu par son nom de marque", "carbonate de calcium et pas d'aluminium"],
    ),
    (
        {"text": "PHOSPHALUGEL"},
        ["PHOSPHALUGEL (aluminium phosphate; recognised by brand name)"],
        ["PHOSPHALUGEL (phosphate d'aluminium ; reconnu par son nom de marque)"],
    ),
    (
        {"coding": [{"system": ATC, "code": "A02BX02"}], "text": "Ulcar 1 g"},
        ["Ulcar 1 g (sucralfate; recognised by its ingredient code, ATC A02BX02)"],
        ["Ulcar 1 g (sucralfate ; reconnu par son code de substance, ATC A02BX02)"],
    ),
]


def _draft_request(concept: dict[str, Any]) -> dict[str, Any]:
    request = copy.deepcopy(load_request("21-select-aluminium-egfr-22", "order-select"))
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["medicationCodeableConcept"] = concept
    return request


@pytest.mark.parametrize(("concept", "english", "french"), CARD_CASES)
def test_aluminium_card_names_product_salt_and_how(
    client: FlaskClient, concept: dict[str, Any], english: list[str], french: list[str]
) -> None:
    for lang, expected in (("en", english), ("fr", french)):
        response = client.post(
            f"/cds-services/{SERVICES['order-select']}",
            json=_draft_request(concept),
            headers={"Accept-Language": lang},
        )
        assert response.status_code == 200, response.json
        assert_valid_response(response.json)
        cards = [
            c
            for c in response.json["cards"]
            if c["source"]["topic"]["code"] == "aluminium-hydroxide-renal"
        ]
        assert [c["indicator"] for c in cards] == ["critical"]
        for words in expected:
            assert words in cards[0]["detail"], (lang, words)


def test_aluminium_card_summary_names_the_salt(client: FlaskClient) -> None:
    response = client.post(
        f"/cds-services/{SERVICES['order-select']}",
        json=_draft_request({"text": "PHOSPHALUGEL"}),
        headers={"Accept-Language": "en"},
    )
    summary = next(
        c["summary"]
        for c in response.json["cards"]
        if c["source"]["topic"]["code"] == "aluminium-hydroxide-renal"
    )
    assert "aluminium phosphate" in summary


def test_unknown_brand_gets_no_aluminium_card(client: FlaskClient) -> None:
    response = client.post(
        f"/cds-services/{SERVICES['order-select']}",
        json=_draft_request({"text": "Mylanta Classic"}),
    )
    assert response.status_code == 200
    codes = [c["source"]["topic"]["code"] for c in response.json["cards"]]
    assert "aluminium-hydroxide-renal" not in codes


def _reference_request(contained: dict[str, Any] | None, display: str | None) -> dict[str, Any]:
    request = _draft_request({"text": "placeholder"})
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    del draft["medicationCodeableConcept"]
    reference: dict[str, Any] = {"reference": "#med" if contained else "Medication/absent"}
    if display:
        reference["display"] = display
    draft["medicationReference"] = reference
    if contained:
        draft["contained"] = [contained]
    return request


@pytest.mark.parametrize(
    ("contained", "display", "words"),
    [
        (
            {
                "resourceType": "Medication",
                "id": "med",
                "ingredient": [
                    {"itemCodeableConcept": rxnorm("612"), "isActive": True},
                    {"itemCodeableConcept": {"text": "Magnesium hydroxide"}},
                ],
            },
            None,
            f"({AL_MG}; recognised by the ingredients of its Medication resource)",
        ),
        (
            {"resourceType": "Medication", "id": "med", "code": rxnorm("314234")},
            None,
            "(sucralfate; recognised by the code of its Medication resource, RxNorm 314234)",
        ),
        (None, "XOLAAM, comprimé à croquer", f"XOLAAM, comprimé à croquer ({AL_MG}; recognised"),
    ],
)
def test_medication_reference_shapes_on_the_card(
    client: FlaskClient, contained: dict[str, Any] | None, display: str | None, words: str
) -> None:
    response = client.post(
        f"/cds-services/{SERVICES['order-select']}",
        json=_reference_request(contained, display),
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 200, response.json
    cards = [
        c
        for c in response.json["cards"]
        if c["source"]["topic"]["code"] == "aluminium-hydroxide-renal"
    ]
    assert [c["indicator"] for c in cards] == ["critical"]
    assert words in cards[0]["detail"]


# ------------------------------------------------------------------ local forms, on the card


def _al_cards(client: FlaskClient, concept: dict[str, Any], route: dict[str, Any] | None) -> list:
    request = _draft_request(concept)
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    if route is not None:
        draft["dosageInstruction"][0]["route"] = route
    response = client.post(f"/cds-services/{SERVICES['order-select']}", json=request)
    assert response.status_code == 200, response.json
    assert_valid_response(response.json)
    return [
        c["indicator"]
        for c in response.json["cards"]
        if c["source"]["topic"]["code"] == "aluminium-hydroxide-renal"
    ]


@pytest.mark.parametrize(
    ("concept", "route", "indicators"),
    [
        # the route of the dosage instruction is read (SNOMED CT 6064005 Topical route)
        (text("aluminium hydroxide"), {"coding": [{"system": SNOMED, "code": "6064005"}]}, []),
        (
            text("aluminium hydroxide"),
            {"coding": [{"system": SNOMED, "code": "26643006"}]},
            ["critical"],
        ),
        (text("Hepatitis B vaccine, adsorbed on aluminium hydroxide"), None, []),
        (text("aluminium hydroxide gel"), None, ["critical"]),
        (text("PHOSPHALUGEL, gel oral"), {"text": "Oral"}, ["critical"]),
        # a product code names its dose form: trusted whatever the route says
        (rxnorm("307746"), {"text": "topical"}, ["critical"]),
    ],
)
def test_local_forms_get_no_aluminium_card(
    client: FlaskClient,
    concept: dict[str, Any],
    route: dict[str, Any] | None,
    indicators: list[str],
) -> None:
    assert _al_cards(client, concept, route) == indicators


def test_malformed_forms_section_and_exposure_are_rejected(tmp_path: Path) -> None:
    bad = {
        "forms:\n  topical_things: {words: [cream]}\n": "unknown kind",
        "forms:\n  local_forms:\n    codes: [{system: s, code: '1', display: Cream}]\n": "source",
        (
            "forms:\n  local_forms:\n    codes: [{system: s, code: '1', display: a, source: x}]\n"
            "  systemic_forms:\n    codes: [{system: s, code: '1', display: a, source: x}]\n"
        ): "two kinds",
    }
    for i, (section, message) in enumerate(bad.items()):
        folder = tmp_path / f"lexicon{i}"
        folder.mkdir()
        (folder / "forms.yaml").write_text(
            f"group: forms\ndescription: x\n{section}", encoding="utf-8"
        )
        with pytest.raises(TerminologyError, match=message):
            load_lexicon(folder)
    valuesets = tmp_path / "valuesets"
    valuesets.mkdir()
    (valuesets / "x.yaml").write_text(
        "id: x\ntitle: {en: x, fr: x}\napplies_to: MedicationRequest\ndescription: x\n"
        "exposure: topical\ntext: [x]\n",
        encoding="utf-8",
    )
    with pytest.raises(TerminologyError, match="exposure"):
        Terminology.load(valuesets)


def test_the_forms_data_loads_with_its_sources() -> None:
    forms = LEXICON.forms
    assert "gel" in forms.words["local_forms"]
    assert "buvable" in forms.words["systemic_routes"]
    assert forms.codes[("snomed.info/sct", "54485002")] == ("local_routes", "ophthalmic route")
    assert forms.codes[("standardterms.edqm.eu", "20053000")] == ("systemic_routes", "oral use")
    assert forms.systems["hl7.org/fhir/sid/cvx"] == "vaccine"
    data = yaml.safe_load((PRODUCT_DIR / "forms.yaml").read_text(encoding="utf-8"))
    for spec in data["forms"].values():
        for entry in (spec.get("codes") or []) + (spec.get("systems") or []):
            assert entry["source"]


FIELD_ORDER_SELECT = ROOT / "fixtures/field/order-select"


@pytest.mark.parametrize(
    ("partner", "interaction"),
    [
        ("cyclosporine 0.5 MG/ML Ophthalmic Emulsion [Restasis]", False),
        ("IKERVIS 1 mg/mL, collyre en émulsion", False),
        ("ciclosporine 1 mg/mL, collyre en émulsion", False),
        ("KETOCONAZOLE 2 % SHAMPOO", False),
        ("NEORAL 100 mg, capsule molle", True),
        ("ketoconazole 200 mg tablet", True),
    ],
)
def test_eye_drop_or_shampoo_partner_gets_no_colchicine_interaction_card(
    client: FlaskClient, partner: str, interaction: bool
) -> None:
    path = FIELD_ORDER_SELECT / "72-fr-colchicine-opocalcium-selected.request.json"
    request = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
    drafts = request["context"]["draftOrders"]["entry"]
    drafts[1]["resource"]["medicationCodeableConcept"] = {"text": partner}
    request["context"]["selections"] = [
        f"MedicationRequest/{entry['resource']['id']}" for entry in drafts
    ]
    response = client.post(f"/cds-services/{SERVICES['order-select']}", json=request)
    assert response.status_code == 200, response.json
    assert_valid_response(response.json)
    # One card per order: a merged finding is named in the card's footer ("also `rule`").
    named = {
        rule
        for c in response.json["cards"]
        for rule in [c["source"]["topic"]["code"], *re.findall(r"`([a-z-]+)`", c["detail"])]
    }
    assert "colchicine-renal" in named
    assert ("colchicine-interaction" in named) is interaction
