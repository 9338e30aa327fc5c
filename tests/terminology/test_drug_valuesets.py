"""Drug value sets mean "any product containing this ingredient" (issue 11, §1): the product codes
EHRs and the official CDS Hooks Sandbox send, brand and French proprietary names with their
verified composition, and no false membership (eye-drop ciclosporin, ketoconazole shampoo,
calcium salts of other drugs)."""

from __future__ import annotations

import pytest

from cds_service.knowledge.safety import load_table, table_valuesets
from cds_service.terminology import RXNORM, Terminology
from cds_service.terminology.systems import ATC

TERMINOLOGY = Terminology.load()


def valuesets(text: str | None = None, *codes: str) -> dict[str, tuple[str, ...]]:
    concept: dict = {"coding": [{"system": RXNORM, "code": code} for code in codes]}
    if text:
        concept["text"] = text
    return {m.valueset: m.ingredients for m in TERMINOLOGY.match_medication(concept, None)}


# Drug sets read by a rule with no RxNorm product code that could be verified: their coded
# orders are recognised by ATC and by name only, which their descriptions say.
WITHOUT_VERIFIED_RXNORM = {
    "ibandronate",
    "pamidronate",
    "ivig",
    "calcium-injection",
    "sodium-thiosulfate",
}


def test_every_drug_value_set_the_rules_read_lists_product_codes() -> None:
    # aluminium-hydroxide has its product codes in the product lexicon (products/aluminium.yaml)
    drug_sets = {
        vs_id
        for vs_id in table_valuesets()
        if TERMINOLOGY[vs_id].applies_to == "MedicationRequest" and vs_id != "aluminium-hydroxide"
    } - WITHOUT_VERIFIED_RXNORM
    for vs_id in sorted(WITHOUT_VERIFIED_RXNORM):
        assert "could be verified" in TERMINOLOGY[vs_id].description, vs_id
    # French / ATC-only drugs (roxithromycin, josamycin, pristinamycin: no RxNorm product) say
    # why in `atc_only_reason`; only they are spared, and they must carry an ATC code and names.
    atc_only = {vs_id for vs_id in drug_sets if TERMINOLOGY[vs_id].atc_only_reason}
    for vs_id in sorted(atc_only):
        vs = TERMINOLOGY[vs_id]
        assert any(c.system == ATC for c in vs.concepts), f"{vs_id}: no ATC code"
        assert vs.phrases, f"{vs_id}: no names"
        assert not any(c.system == RXNORM for c in vs.concepts), f"{vs_id}: has RxNorm codes"
    drug_sets -= atc_only
    assert len(drug_sets) >= 16
    for vs_id in sorted(drug_sets):
        products = [
            c
            for c in TERMINOLOGY[vs_id].concepts
            if c.system == RXNORM and any(ch.isdigit() for ch in c.display)
        ]
        assert products, f"{vs_id}: no RxNorm product code (SCD/SBD...)"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("197541", {"colchicine"}),  # Colchicine 0.6 MG Oral Tablet (Sandbox list)
        ("198153", {"colchicine", "probenecid"}),  # colchicine / probenecid tablet
        ("904465", {"alendronate", "vitamin-d-supplement"}),  # Fosamax Plus D
        ("905026", {"risedronate"}),  # Actonel 35 mg
        ("830861", {"diltiazem"}),  # 24 HR diltiazem 120 mg capsule (VSAC)
        ("1791229", {"diltiazem"}),  # diltiazem injection
        ("897853", {"verapamil"}),  # trandolapril / verapamil
        ("898316", {"verapamil"}),  # verapamil prefilled syringe
        ("629695", {"minocycline"}),  # 24 HR minocycline 135 mg
        ("855332", {"warfarin"}),  # warfarin sodium 5 mg
        ("1291986", {"clarithromycin"}),  # amoxicillin / clarithromycin / omeprazole pack
        ("835911", {"ciclosporin"}),  # Neoral 100 mg capsule
        ("197853", {"ketoconazole"}),
        ("311204", {"itraconazole"}),
        ("1243415", {"calcium-supplement", "vitamin-d-supplement"}),  # Os-Cal 500 with D
        ("308867", {"vitamin-d-supplement"}),  # calcitriol 0.25 mcg
    ],
)
def test_product_codes_put_an_order_in_its_ingredients_value_sets(
    code: str, expected: set[str]
) -> None:
    assert set(valuesets(None, code)) == expected


def test_codes_whose_displays_disagree_between_sources_are_left_out() -> None:
    # 308460 is azithromycin (VSAC, tx.fhir.org, Sandbox), although a hand-made "strong CYP3A4
    # inhibitor" list names it clarithromycin; 349251 is tenofovir, 200344 hydroxyurea.
    for code in ("308460", "349251", "200344"):
        assert not valuesets(None, code), code


def test_eye_drop_ciclosporin_is_not_a_colchicine_interaction_partner() -> None:
    for code in ("402092", "351291", "2055021"):  # Restasis, generic, Cequa-type solution
        found = valuesets(None, code)
        assert "ciclosporin" not in found, code
        assert "ciclosporin-ophthalmic" in found, code


def test_eye_drop_ciclosporin_named_in_full_is_not_systemic() -> None:
    found = valuesets("cyclosporine 0.5 MG/ML Ophthalmic Suspension [Restasis]", "402092")
    assert "ciclosporin" not in found
    assert "ciclosporin-ophthalmic" in found
    found = valuesets("cyclosporine 0.5 MG/ML Ophthalmic Emulsion [Restasis]")
    assert set(found) == {"ciclosporin-ophthalmic"}


def test_nizoral_is_ketoconazole_only_as_an_oral_form() -> None:
    assert "ketoconazole" not in valuesets("NIZORAL A-D 1% shampoo")
    assert "ketoconazole" in valuesets("Nizoral 200 mg tablet")


@pytest.mark.parametrize(
    ("name", "vs_id", "ingredients"),
    [
        ("COLCHIMAX, comprimé pelliculé sécable", "colchicine", {"colchicine", "tiemonium"}),
        ("COLCHICINE OPOCALCIUM 1 mg", "colchicine", {"colchicine"}),
        ("MONO-TILDIEM LP 300 mg, gélule", "diltiazem", {"diltiazem"}),
        ("ISOPTINE 120 mg, gélule", "verapamil", {"verapamil"}),
        ("MYNOCINE 100 mg, gélule", "minocycline", {"minocycline"}),
        ("COUMADINE 5 mg, comprimé sécable", "warfarin", {"warfarin"}),
        ("ZECLAR 500 mg, comprimé pelliculé", "clarithromycin", {"clarithromycin"}),
        ("FOSAVANCE 70 mg/5600 UI", "vitamin-d-supplement", {"alendronic acid", "colecalciferol"}),
        ("CACIT VITAMINE D3 1000 mg/880 UI", "calcium-supplement", {"calcium carbonate"}),
        ("OROCAL VITAMINE D3 500 mg/400 U.I.", "vitamin-d-supplement", {"colecalciferol"}),
        ("STEROGYL 2 000 000 UI/100 ml", "vitamin-d-supplement", {"ergocalciferol"}),
        ("DEDROGYL 15 mg/100 ml", "vitamin-d-supplement", {"calcifediol"}),
        ("TARKA 2 mg/180 mg", "verapamil", {"trandolapril", "verapamil"}),
    ],
)
def test_brands_are_recognised_with_their_verified_composition(
    name: str, vs_id: str, ingredients: set[str]
) -> None:
    found = valuesets(name)
    assert vs_id in found, found
    assert ingredients <= set(found[vs_id])


@pytest.mark.parametrize(
    "name",
    [
        "atorvastatin calcium 20 MG Oral Tablet",
        "rosuvastatin calcium 10 mg tablet",
        "leucovorin calcium 5 mg tablet",
        "calcium polystyrene sulfonate powder",
    ],
)
def test_calcium_salts_of_other_drugs_are_not_calcium_supplements(name: str) -> None:
    assert "calcium-supplement" not in valuesets(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("COLCHICINE 0.6 MG PO TABS", {"colchicine"}),
        ("DILTIAZEM HCL ER COATED BEADS 120 MG PO CP24", {"diltiazem"}),
        ("VERAPAMIL HCL ER 240 MG PO TBCR", {"verapamil"}),
        ("WARFARIN SODIUM 5 MG PO TABS", {"warfarin"}),
        ("MINOCYCLINE HCL 100 MG PO CAPS", {"minocycline"}),
        ("CYCLOSPORINE MODIFIED 100 MG PO CAPS", {"ciclosporin"}),
        ("ALENDRONATE SODIUM 70 MG PO TABS", {"alendronate"}),
        ("PAMIDRONATE DISODIUM 90 MG IV SOLR", {"pamidronate"}),
        (
            "CALCIUM CARBONATE-VITAMIN D 600-400 MG-UNIT PO TABS",
            {"calcium-supplement", "vitamin-d-supplement"},
        ),
        ("OYSTER SHELL CALCIUM 500 MG PO TABS", {"calcium-supplement"}),
        ("Vit D3 2000 IU", {"vitamin-d-supplement"}),
        ("ERGOCALCIFEROL 1.25 MG (50000 UT) PO CAPS", {"vitamin-d-supplement"}),
    ],
)
def test_ehr_order_names_are_recognised(name: str, expected: set[str]) -> None:
    assert set(valuesets(name)) == expected


# ------------------------------------------------------------------ local forms (not systemic)

SNOMED = "http://snomed.info/sct"
EDQM = "http://standardterms.edqm.eu"
CVX = "http://hl7.org/fhir/sid/cvx"
# A drug set whose every reading row is limited to parenteral orders (`route: parenteral`) needs
# no local-form filter: an injection is never a cream (sodium thiosulfate, issue 14 point 5).
_READING_ROWS = {
    vs_id: [
        row.route
        for rule in load_table().values()
        if vs_id in (*rule.drugs, *rule.partners)
        for row in rule.rows
    ]
    for vs_id in table_valuesets()
}
PARENTERAL_ONLY = {
    vs_id for vs_id, routes in _READING_ROWS.items() if routes and set(routes) == {"parenteral"}
}
SYSTEMIC_SETS = sorted(
    vs_id
    for vs_id in table_valuesets() - PARENTERAL_ONLY
    if TERMINOLOGY[vs_id].applies_to == "MedicationRequest"
)


def test_every_drug_value_set_the_safety_rules_read_is_about_systemic_exposure() -> None:
    assert len(SYSTEMIC_SETS) >= 16
    for vs_id in SYSTEMIC_SETS:
        assert TERMINOLOGY[vs_id].exposure == "systemic", vs_id
    # a set no safety rule reads keeps every form (ophthalmic ciclosporin); so does one read
    # only for parenteral orders (sodium thiosulfate: its topical form stays recognised)
    assert TERMINOLOGY["ciclosporin-ophthalmic"].exposure == "any"
    assert {"sodium-thiosulfate", "calcium-injection"} == PARENTERAL_ONLY
    assert TERMINOLOGY["sodium-thiosulfate"].exposure == "any"


@pytest.mark.parametrize(
    ("name", "vs_id"),
    [
        ("cyclosporine 0.5 MG/ML Ophthalmic Emulsion [Restasis]", "ciclosporin"),
        ("ciclosporine collyre en émulsion", "ciclosporin"),
        ("CYCLOSPORINE 0.05 % ophthalmic emulsion, 1 drop each eye", "ciclosporin"),
        ("ketoconazole 2% cream", "ketoconazole"),
        ("KETOCONAZOLE 2 % SHAMPOO", "ketoconazole"),
        ("kétoconazole 2 %, crème", "ketoconazole"),
        ("kétoconazole 2 %, gel en sachet-dose", "ketoconazole"),  # a sachet is no oral form
        ("ketoconazole 2% foam", "ketoconazole"),
        ("KETOCONAZOLE 2 % EX CREA", "ketoconazole"),  # Epic-style: EX = external
        ("minocycline 4% topical foam", "minocycline"),
        ("minocycline 2% gel", "minocycline"),
        ("minocycline mousse 4 %", "minocycline"),
        ("calcitriol 3 mcg/g ointment", "vitamin-d-supplement"),
        ("calcitriol 3 microgrammes/g, pommade", "vitamin-d-supplement"),
        ("diltiazem 2% cream", "diltiazem"),
        ("verapamil 15% gel", "verapamil"),
        ("aluminium hydroxide topical solution", "aluminium-hydroxide"),
        ("aluminum hydroxide, antiperspirant stick", "aluminium-hydroxide"),
        ("aluminium phosphate adsorbed diphtheria and tetanus toxoids", "aluminium-hydroxide"),
        ("Hepatitis B vaccine (recombinant), aluminium hydroxide adjuvant", "aluminium-hydroxide"),
        (
            "vaccin tétanique adsorbé sur hydroxyde d'aluminium, suspension injectable",
            "aluminium-hydroxide",
        ),
        ("colchicine cream", "colchicine"),
        ("vitamin D3 cream", "vitamin-d-supplement"),
    ],
)
def test_a_named_product_in_a_local_form_is_not_in_a_systemic_set(name: str, vs_id: str) -> None:
    assert vs_id not in valuesets(name)


@pytest.mark.parametrize(
    ("name", "vs_id"),
    [
        ("ketoconazole 200 mg tablet", "ketoconazole"),
        ("minocycline 100 mg capsule", "minocycline"),
        ("MINOCYCLINE HCL 100 MG PO CAPS", "minocycline"),
        ("cyclosporine 100 mg oral capsule", "ciclosporin"),
        ("ciclosporine 100 mg/ml, solution buvable", "ciclosporin"),
        ("cyclosporine 50 mg/mL injection", "ciclosporin"),
        ("calcitriol 0.25 mcg capsule", "vitamin-d-supplement"),
        ("PAMIDRONATE DISODIUM 90 MG IV SOLR", "pamidronate"),
        ("zoledronic acid 5 mg/100 mL solution for infusion", "zoledronic-acid"),
        ("PHOSPHALUGEL", "aluminium-hydroxide"),  # one word: never read as "gel"
        ("PHOSPHALUGEL, suspension buvable en sachet", "aluminium-hydroxide"),
        ("Phosphalugel, gel oral", "aluminium-hydroxide"),
        ("phosphate d'aluminium, gel buvable", "aluminium-hydroxide"),
        ("ALTERNAGEL", "aluminium-hydroxide"),
        ("AlternaGEL liquid", "aluminium-hydroxide"),
        ("Al(OH)3 gel", "aluminium-hydroxide"),  # aluminium hydroxide gel: an oral antacid
        ("aluminum hydroxide gel 320 mg/5 mL", "aluminium-hydroxide"),
        ("ALUM-MAG HYDROXIDE-SIMETH 200-200-20 MG/5 ML PO SUSP", "aluminium-hydroxide"),
        ("ROCGEL 1,2 g, suspension buvable en sachet-dose", "aluminium-hydroxide"),
        ("GELOX, suspension buvable en sachet", "aluminium-hydroxide"),
        ("diltiazem 60 mg tablet", "diltiazem"),
        ("verapamil 2.5 mg/mL injection", "verapamil"),
        ("miconazole gel buccal + warfarin 5 mg comprimé", "warfarin"),
    ],
)
def test_systemic_forms_stay_recognised(name: str, vs_id: str) -> None:
    assert vs_id in valuesets(name), name


def _med(
    concept: dict | None,
    medication: dict | None = None,
    route: dict | None = None,
    **dosage: str,
) -> set[str]:
    request: dict = {"resourceType": "MedicationRequest", "dosageInstruction": []}
    if route is not None or dosage:
        request["dosageInstruction"].append({**({"route": route} if route else {}), **dosage})
    return {m.valueset for m in TERMINOLOGY.match_medication(concept, medication, request)}


def test_the_route_of_the_dosage_instruction_decides() -> None:
    name = {"text": "cyclosporine 0.05 %"}
    ophthalmic = {"coding": [{"system": SNOMED, "code": "54485002", "display": "Ophthalmic route"}]}
    oral = {"coding": [{"system": SNOMED, "code": "26643006", "display": "Oral route"}]}
    assert "ciclosporin" in _med(name)
    assert "ciclosporin" not in _med(name, route=ophthalmic)
    assert "ciclosporin" in _med(name, route=oral)
    # EDQM route codes, under http or https; a route sent as text only; the dosage text
    cutaneous = {"coding": [{"system": "https://standardterms.edqm.eu", "code": "20003000"}]}
    assert "ketoconazole" not in _med({"text": "ketoconazole 2 %"}, route=cutaneous)
    assert "ketoconazole" not in _med({"text": "ketoconazole 2 %"}, route={"text": "Topical"})
    assert "minocycline" not in _med({"text": "minocycline 4 %"}, text="Apply to affected area")
    # a coded oral route wins over a local word in the name ("gel" of an oral gel)
    assert "minocycline" in _med({"text": "minocycline gel"}, route=oral)
    assert "minocycline" in _med({"text": "minocycline 100 mg"}, text="1 tablet by mouth daily")


def test_the_dose_form_of_the_medication_decides() -> None:
    def form(system: str, code: str, text: str | None = None) -> dict:
        concept: dict = {"coding": [{"system": system, "code": code}]}
        if text:
            concept["text"] = text
        return concept

    keto = {"resourceType": "Medication", "code": {"text": "ketoconazole 2 %"}}
    assert "ketoconazole" in _med(None, keto)
    shampoo = {**keto, "form": form(SNOMED, "385104006")}  # Shampoo
    assert "ketoconazole" not in _med(None, shampoo)
    cream = {**keto, "form": form(EDQM, "10502000")}  # Cream
    assert "ketoconazole" not in _med(None, cream)
    tablet = {"resourceType": "Medication", "code": {"text": "ketoconazole 200 mg"}}
    assert "ketoconazole" in _med(None, {**tablet, "form": form(SNOMED, "385055001")})
    assert "ketoconazole" not in _med(None, {**keto, "form": {"text": "Shampooing"}})
    # ingredients of a Medication in a local form: not systemic either
    by_ingredient = {
        "resourceType": "Medication",
        "form": form(EDQM, "10604500", "Eye drops, emulsion"),
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "3008"}]}}],
    }
    assert "ciclosporin" not in _med(None, by_ingredient)
    # "gel" is an oral form for aluminium (value set `systemic_forms: [gel]`), coded or not
    al = {"resourceType": "Medication", "code": {"text": "aluminium hydroxide"}}
    assert "aluminium-hydroxide" in _med(None, {**al, "form": form(SNOMED, "385100002")})
    assert "aluminium-hydroxide" in _med(None, {**al, "form": form(EDQM, "10108000")})  # Oral gel
    assert "ketoconazole" not in _med(None, {**keto, "form": form(SNOMED, "385100002")})


def test_a_vaccine_is_not_an_aluminium_medicine_whatever_its_route() -> None:
    im = {"coding": [{"system": SNOMED, "code": "78421000", "display": "Intramuscular route"}]}
    adsorbed = {"text": "tetanus toxoid adsorbed (aluminium phosphate) injection"}
    assert "aluminium-hydroxide" not in _med(adsorbed, route=im)
    cvx = {"coding": [{"system": CVX, "code": "09"}], "text": "Td, aluminium phosphate"}
    assert "aluminium-hydroxide" not in _med(cvx)


def test_product_codes_are_trusted_as_they_are() -> None:
    # An RxNorm SBD names its dose form: a systemic product code keeps its value set whatever
    # the words around it, and eye-drop codes stay out of the systemic set.
    concept = {
        "coding": [{"system": RXNORM, "code": "835911"}],
        "text": "cyclosporine (Neoral) - see ophthalmology note",
    }
    assert "ciclosporin" in _med(concept)
    for code in ("402092", "351291", "2055021"):
        assert "ciclosporin" not in _med({"coding": [{"system": RXNORM, "code": code}]}), code


def test_no_product_code_of_a_systemic_set_names_a_local_form() -> None:
    from cds_service.terminology.medicines import LOCAL, name_exposure
    from cds_service.terminology.products import load_lexicon

    lexicon = load_lexicon()

    def local(display: str, vs_id: str) -> bool:
        return name_exposure(display, TERMINOLOGY[vs_id]) == LOCAL

    checked = 0
    for vs_id in SYSTEMIC_SETS:
        for c in TERMINOLOGY[vs_id].concepts:
            if any(ch.isdigit() for ch in c.display):
                assert not local(c.display, vs_id), (vs_id, c.code, c.display)
                checked += 1
    for product in lexicon.products:
        for vs_id in lexicon.valuesets_of(product.ingredients) & set(SYSTEMIC_SETS):
            for code in product.codes:
                assert not local(code.display, vs_id), (vs_id, code.code, code.display)
                checked += 1
    assert checked > 200
