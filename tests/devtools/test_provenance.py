"""Provenance inside the repository (issue 11, §5): docs/sources.md describes every source
document, docs/codes.md lists every code with where it was verified (generated from the value
sets and the product lexicon), and check-knowledge fails on a citation that does not resolve."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cds_service.devtools import provenance
from cds_service.devtools.cli import main as cli_main
from cds_service.devtools.provenance import (
    CODES_MD,
    PROJECT_DIR,
    SOURCES_MD,
    ProvenanceError,
    citation_problems,
    generated_blocks,
    render,
)
from cds_service.settings import DEFAULT_CARDS_DIR
from cds_service.terminology import VALUESET_DIR, Terminology

SEEDS = {
    "000": "000_6d4d19c559943f32.txt",
    "001": "001_b85d1837d5607e8f.txt",
    "002": "002_34cd2fc0074ea955.txt",
    "003": "003_c1061641acf454dd.txt",
    "004": "004_e3b94dc6df5ece58.txt",
}
SHARED_SEEDS = PROJECT_DIR.parent / "shared" / "seeds"
FIELDS = (
    "Title",
    "Author / organisation",
    "Year",
    "Type",
    "Language",
    "What the product takes from it",
    "Evidence strength",
)


def section(text: str, heading_start: str) -> str:
    """The text under the first `## ` heading starting with `heading_start`."""
    match = re.search(rf"^## {re.escape(heading_start)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {heading_start}...'"
    return match.group(1)


def table_codes(text: str) -> set[tuple[str, str]]:
    """(value set, code) of every row of the generated code tables of docs/codes.md."""
    found = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[1] != "system":
            found.add((cells[0].strip("`"), cells[2].removesuffix(" and below")))
    return found


# ----------------------------------------------------------------------------- docs/codes.md


def test_docs_codes_md_is_up_to_date_with_the_value_sets() -> None:
    text = CODES_MD.read_text(encoding="utf-8")
    assert render(text, generated_blocks()) == text, (
        "docs/codes.md is out of date with the value sets or the product lexicon; "
        f"regenerate it: {provenance.REGENERATE}"
    )


def test_every_value_set_code_has_its_row_with_where_it_was_verified() -> None:
    terminology = Terminology.load()
    wanted = {(v.id, c.code) for v in terminology.valuesets.values() for c in v.concepts}
    assert wanted  # the value sets hold codes
    missing = sorted(wanted - table_codes(CODES_MD.read_text(encoding="utf-8")))
    assert not missing, f"not in docs/codes.md: {missing[:5]}...; run {provenance.REGENERATE}"
    row = next(
        line
        for line in CODES_MD.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `systemic-sclerosis` | SNOMED CT | 89155008 |")
    )
    assert "OHDSI/PhenotypeLibrary@40106e4e inst/cohorts/29.json" in row


def test_codes_md_has_the_sections_the_citations_name() -> None:
    headings = re.findall(r"^#+ (.+)$", CODES_MD.read_text(encoding="utf-8"), re.M)
    for title in ("1. Conditions", "2. Observations", "3. Medications", "4. Rules and thresholds"):
        assert title in headings
    assert any(h.startswith("5. Gaps") for h in headings)


def copy_valuesets(tmp_path: Path) -> Path:
    directory = tmp_path / "valuesets"
    shutil.copytree(VALUESET_DIR, directory)
    return directory


def test_the_command_regenerates_the_tables_and_keeps_the_prose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valuesets = copy_valuesets(tmp_path)
    (valuesets / "zz-test-drug.yaml").write_text(
        "id: zz-test-drug\ntitle: {en: test drug, fr: médicament test}\n"
        "applies_to: MedicationRequest\ndescription: a test.\ncodes:\n"
        '  - {system: "http://www.whocc.no/atc", code: "Z99ZZ99", display: "test | drug",\n'
        '     source: "seen in a test, tests/devtools/test_provenance.py"}\n',
        encoding="utf-8",
    )
    (valuesets / "raynaud.yaml").unlink()
    codes_md = tmp_path / "codes.md"
    codes_md.write_text(
        CODES_MD.read_text(encoding="utf-8") + "\nA line written by hand.\n", encoding="utf-8"
    )
    argv = ["--codes-md", str(codes_md), "--valuesets-dir", str(valuesets)]
    argv += ["--products-dir", str(tmp_path / "no-products")]

    assert provenance.main([*argv, "--check"]) == 1
    assert "make provenance" in capsys.readouterr().err
    assert provenance.main(argv) == 0
    assert "rewritten" in capsys.readouterr().out

    text = codes_md.read_text(encoding="utf-8")
    assert (
        "| `zz-test-drug` | ATC | Z99ZZ99 | test \\| drug "
        "| seen in a test, tests/devtools/test_provenance.py |" in text
    )
    assert ("raynaud", "266261006") not in table_codes(text)
    assert "A line written by hand." in text
    assert section(text, "1. Conditions").count("`zz-test-drug`") == 0
    assert "`zz-test-drug`" in section(text, "3. Medications")
    assert provenance.main([*argv, "--check"]) == 0


def test_the_product_lexicon_has_its_own_table(tmp_path: Path) -> None:
    products = tmp_path / "products"
    products.mkdir()
    (products / "colchicine.yaml").write_text(
        """
group: colchicine
description: Colchicine products.
ingredients:
  colchicine: {fr: colchicine, valuesets: [colchicine], source: "RxNorm IN 2683 (test)"}
  tiemonium: {fr: tiémonium, valuesets: [], source: "ANSM BDPM (test)"}
products:
  - names: [COLCHIMAX]
    country: FR
    ingredients: [colchicine, tiemonium]
    source: "ANSM BDPM CIS 00000000 (test)"
  - display: "colchicine 0.6 MG Oral Tablet"
    ingredients: [colchicine]
    source: "RxNorm (test)"
    codes:
      - {system: "http://www.nlm.nih.gov/research/umls/rxnorm", code: "1234567", tty: SCD,
         display: "colchicine 0.6 MG Oral Tablet", source: "RxNav (test)"}
ambiguous:
  - {names: [MAALOX], country: US, note: "several compositions", source: "DailyMed (test)"}
""",
        encoding="utf-8",
    )
    body = generated_blocks(products_dir=products)["products"]
    assert (
        "| COLCHIMAX | FR | colchicine + tiemonium | `colchicine` | colchicine.yaml "
        "| ANSM BDPM CIS 00000000 (test) |" in body
    )
    assert (
        "| colchicine 0.6 MG Oral Tablet | RxNorm (SCD) | 1234567 | "
        "colchicine 0.6 MG Oral Tablet | RxNav (test) |" in body
    )
    assert "| tiemonium | tiémonium | none | ANSM BDPM (test) |" in body
    assert "| MAALOX | US | several compositions | DailyMed (test) |" in body
    assert "1 files" in generated_blocks(products_dir=products)["summary"]


def test_a_missing_generated_block_is_named() -> None:
    text = CODES_MD.read_text(encoding="utf-8")
    start = text.index("<!-- BEGIN GENERATED safety")
    end = text.index("<!-- END GENERATED safety -->") + len("<!-- END GENERATED safety -->")
    with pytest.raises(ProvenanceError, match="safety"):
        render(text[:start] + text[end:], generated_blocks())


# ----------------------------------------------------------------------------- docs/sources.md


def test_sources_md_describes_every_seed_with_its_full_reference() -> None:
    text = SOURCES_MD.read_text(encoding="utf-8")
    for number, name in SEEDS.items():
        body = section(text, f"seed {number} — {name}")
        for field in FIELDS:
            assert re.search(rf"^- \*\*{re.escape(field)}\*\*: \S", body, re.M), (number, field)
    assert "Cotton" in section(text, "seed 001")
    assert "2024" in section(text, "seed 001")
    assert "Smith G" in section(text, "seed 000")
    assert "2019" in section(text, "seed 000")
    assert "weakest" in section(text, "seed 004")


@pytest.mark.skipif(not SHARED_SEEDS.is_dir(), reason="../shared/seeds is not beside the project")
def test_sources_md_has_a_section_for_each_seed_file_beside_the_project() -> None:
    headings = re.findall(r"^## (seed .+)$", SOURCES_MD.read_text(encoding="utf-8"), re.M)
    for path in sorted(SHARED_SEEDS.glob("*.txt")):
        assert f"seed {path.name[:3]} — {path.name}" in headings


def test_readme_points_to_the_sources_and_the_code_table() -> None:
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    assert "docs/sources.md" in readme
    assert "docs/codes.md" in readme
    assert "make provenance" in readme


# ----------------------------------------------------------------------------- citations


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_knowledge_files_cite_only_what_the_repository_holds() -> None:
    problems, checked = citation_problems(provenance.knowledge_files(DEFAULT_CARDS_DIR))
    assert problems == []
    assert checked > 100  # the value sets, cards and rules do cite


def test_citations_that_resolve(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "good.yaml",
        "a: seed 002, seeds 000, 001 and Seeds 003 and 004\n"
        "b: 002_34cd2fc0074ea955.txt\n"
        "c: (codes.md §3) (docs/codes.md §4: verified) (codes.md §2.1)\n"
        'd: (docs/codes.md, "Gaps") [abbreviated as seen in codes.md]\n',
    )
    problems, checked = citation_problems([path])
    assert problems == []
    assert checked == 11


def test_citations_that_do_not_resolve_are_named_with_their_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        "codes:\n"
        "  - {source: seed 007}\n"
        "  - {source: 005_0123456789abcdef.txt}\n"
        "  - {source: (codes.md §9)}\n"
        "  - {source: (shared/clinical/codes.md §1)}\n"
        '  - {source: (codes.md, "Nowhere")}\n',
    )
    problems, _ = citation_problems([path])
    assert problems == [
        "bad.yaml line 2: cites seed 007, which docs/sources.md does not describe",
        "bad.yaml line 3: cites 005_0123456789abcdef.txt, which docs/sources.md does not describe",
        "bad.yaml line 4: cites codes.md §9, which is not a section of docs/codes.md",
        "bad.yaml line 5: cites shared/clinical/codes.md, outside this repository; "
        "cite docs/codes.md §1",
        'bad.yaml line 6: cites codes.md "Nowhere", which is not a heading of docs/codes.md',
    ]


def test_a_seed_heading_must_name_its_own_file(tmp_path: Path) -> None:
    sources = write(tmp_path, "sources.md", "# Sources\n\n## seed 001 — 002_34cd2fc0074ea955.txt\n")
    cites = write(tmp_path, "card.yaml", "source: seed 001 (002_34cd2fc0074ea955.txt)\n")
    problems, _ = citation_problems([cites], sources_md=sources)
    assert problems[0] == (
        "sources.md: heading 'seed 001 — 002_34cd2fc0074ea955.txt' names "
        "002_34cd2fc0074ea955.txt, not a seed 001 file"
    )
    assert "card.yaml line 1: cites 002_34cd2fc0074ea955.txt" in problems[1]


def test_without_the_docs_no_citation_resolves(tmp_path: Path) -> None:
    cites = write(tmp_path, "card.yaml", "source: seed 001; codes.md §1\n")
    problems, _ = citation_problems(
        [cites], sources_md=tmp_path / "sources.md", codes_md=tmp_path / "codes.md"
    )
    assert problems == [
        "sources.md is missing: the citations cannot resolve",
        "codes.md is missing: the citations cannot resolve",
    ]


def test_check_knowledge_fails_on_a_seed_the_sources_do_not_describe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    path = cards / "probenecid-renal.yaml"
    text = path.read_text(encoding="utf-8")
    assert "(seed 002)" in text
    path.write_text(text.replace("(seed 002)", "(seed 009)"), encoding="utf-8")
    status = cli_main(["check-knowledge", "--cards-dir", str(cards)])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  citations" in out
    assert re.search(r"probenecid-renal\.yaml line \d+: cites seed 009, which", out)
    assert "ok    value sets" in out  # the other checks still run


def test_check_knowledge_says_how_to_regenerate_a_stale_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "up_to_date", lambda: False)
    cli_main(["check-knowledge"])
    out = capsys.readouterr().out
    assert "citations resolve in docs/sources.md and docs/codes.md" in out
    assert "note: docs/codes.md is out of date" in out
    assert "make provenance" in out
