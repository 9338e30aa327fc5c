"""Provenance inside the repository: the code-provenance table and the citation check.

``docs/codes.md`` lists every code of the value sets (``cds_service/terminology/valuesets/``)
and every product of the lexicon (``cds_service/terminology/products/``) with where it was
verified. Its tables are generated from those files; the prose around them is written by hand
and kept as it is. Regenerate after editing a value set or the lexicon:

    make provenance                                    (or, without make:)
    python -m cds_service.devtools.provenance         rewrite the tables of docs/codes.md
    python -m cds_service.devtools.provenance --check exit 1 when docs/codes.md is out of date

``citation_problems`` is the check behind ``check-knowledge``'s "citations": every "seed NNN",
seed file name and "codes.md §N" that a knowledge file cites resolves inside the repository, in
``docs/sources.md`` (the source documents) and ``docs/codes.md`` (its numbered sections).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cds_service.settings import content_dir
from cds_service.terminology import SYSTEM_LABELS, VALUESET_DIR, YAML_LOADER

PROJECT_DIR = Path(__file__).resolve().parents[2]
DOCS_DIR = content_dir("docs")  # the repository's docs/, or the installed wheel's copy
CODES_MD = DOCS_DIR / "codes.md"
SOURCES_MD = DOCS_DIR / "sources.md"
PRODUCTS_DIR = VALUESET_DIR.parent / "products"
KNOWLEDGE_DIR = PROJECT_DIR / "cds_service" / "knowledge"
RULES_DIR = KNOWLEDGE_DIR.parent / "rules"
REGENERATE = "make provenance (or: python -m cds_service.devtools.provenance)"

# Which section of docs/codes.md holds the value sets of each resource type.
SECTION_OF = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "Observation": "observations",
    "ServiceRequest": "orders",
    "MedicationRequest": "medications",
}

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED (?P<name>[a-z-]+)[^>]*-->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED (?P=name) -->)",
    re.DOTALL,
)

# Citations, searched in the whole text of a file (a citation may wrap onto the next line).
_SEEDS = re.compile(r"\bseeds?\s+(\d{3}(?:\s*(?:,|and|et|&|/)\s*\d{3})*)\b", re.IGNORECASE)
_SEED_FILE = re.compile(r"\b(\d{3})_[0-9a-f]{16}\.txt\b")
_SEED_FILE_NAME = re.compile(r"\d{3}_[0-9a-f]{16}\.txt")
_CODES_MD = re.compile(
    r"(?P<path>(?:[\w.-]+/)*)codes\.md"
    r"(?:\s*§\s*(?P<section>\d+(?:\.\d+)*)|,?\s*[\"“](?P<title>[^\"”\n]+)[\"”])?"
)
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$", re.MULTILINE)
_NUMBERED = re.compile(r"^(?P<number>\d+(?:\.\d+)*)\.?\s")


class ProvenanceError(ValueError):
    """docs/codes.md cannot be generated (a marker is missing, a data file is malformed)."""


# ----------------------------------------------------------------------------- docs/codes.md


def _cell(value: Any) -> str:
    """One Markdown table cell: on one line, pipes escaped."""
    return " ".join(str(value if value is not None else "").split()).replace("|", "\\|")


def _row(*cells: Any) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise ProvenanceError(f"{path.name}: cannot be read as YAML ({exc})") from None


def _valuesets(directory: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(directory.glob("*.yaml")):
        data = _load_yaml(path)
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"{path.name}: not a value set (a mapping is expected)")
        found.append({**data, "id": str(data.get("id", path.stem))})
    return sorted(found, key=lambda vs: vs["id"])


def _system(entry: Mapping[str, Any]) -> str:
    label = SYSTEM_LABELS.get(entry.get("system", ""), entry.get("system", ""))
    return f"{label} ({entry['tty']})" if entry.get("tty") else label


def _code_rows(valuesets: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = [
        _row("value set", "system", "code", "display", "where verified"),
        "|---|---|---|---|---|",
    ]
    for vs in valuesets:
        for entry in vs.get("codes") or []:
            code = str(entry.get("code", ""))
            if entry.get("descendants"):
                code += " and below"
            rows.append(
                _row(
                    f"`{vs['id']}`",
                    _system(entry),
                    code,
                    entry.get("display", ""),
                    entry.get("source", ""),
                )
            )
    if len(rows) == 2:
        rows.append(_row("(none)", "", "", "", ""))
    return rows


def _title(vs: Mapping[str, Any]) -> str:
    title = vs.get("title") or {}
    return title.get("en", "") if isinstance(title, Mapping) else str(title)


def _index_rows(valuesets: Sequence[Mapping[str, Any]]) -> list[str]:
    section = {"Condition": "§1", "Procedure": "§1", "Observation": "§2", "ServiceRequest": "§2"}
    rows = [
        _row("value set", "title", "applies to", "codes", "names (text)", "table"),
        "|---|---|---|---|---|---|",
    ]
    for vs in valuesets:
        rows.append(
            _row(
                f"`{vs['id']}`",
                _title(vs),
                vs.get("applies_to", ""),
                len(vs.get("codes") or []),
                len(vs.get("text") or []),
                section.get(vs.get("applies_to", ""), "§3"),
            )
        )
    return rows


def _products(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.yaml")):
        data = _load_yaml(path)
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"products/{path.name}: a mapping is expected")
        found.append((path.name, dict(data)))
    return found


def _names(product: Mapping[str, Any]) -> str:
    names = ", ".join(str(n) for n in product.get("names") or [])
    name = names or str(product.get("display", ""))
    if product.get("requires"):
        name += f" (with: {', '.join(str(w) for w in product['requires'])})"
    return name


def _product_rows(lexicon: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    ingredients: dict[str, Mapping[str, Any]] = {}
    for _, data in lexicon:
        ingredients.update(data.get("ingredients") or {})

    def composition(product: Mapping[str, Any]) -> str:
        return " + ".join(str(i) for i in product.get("ingredients") or [])

    def valuesets(product: Mapping[str, Any]) -> str:
        names: list[str] = []
        for key in product.get("ingredients") or []:
            for vs in (ingredients.get(key) or {}).get("valuesets") or []:
                if vs not in names:
                    names.append(vs)
        return ", ".join(f"`{v}`" for v in names) or "none"

    lines = ["**Products** (brand, proprietary or generic names, and their composition)", ""]
    lines += [
        _row("name", "country", "composition", "value sets", "file", "source"),
        "|---|---|---|---|---|---|",
    ]
    codes = [
        _row("product", "system", "code", "display", "where verified"),
        "|---|---|---|---|---|",
    ]
    for file, data in lexicon:
        for product in data.get("products") or []:
            name = _names(product)
            lines.append(
                _row(
                    name,
                    product.get("country", ""),
                    composition(product),
                    valuesets(product),
                    file,
                    product.get("source", ""),
                )
            )
            for entry in product.get("codes") or []:
                codes.append(
                    _row(
                        name,
                        _system(entry),
                        entry.get("code", ""),
                        entry.get("display", ""),
                        entry.get("source", ""),
                    )
                )
    if not lexicon:
        lines.append(_row("(no lexicon file yet)", "", "", "", "", ""))
    lines += ["", "**Product codes** (codes the lexicon holds for its products)", ""]
    lines += codes if len(codes) > 2 else [*codes, _row("(none)", "", "", "", "")]
    lines += ["", "**Ingredients** (the names shown on cards, and the value sets they put a"]
    lines += ["product in)", ""]
    lines += [_row("ingredient", "French", "value sets", "source"), "|---|---|---|---|"]
    for key, spec in sorted(ingredients.items()):
        spec = spec or {}
        lines.append(
            _row(
                key,
                spec.get("fr", ""),
                ", ".join(f"`{v}`" for v in spec.get("valuesets") or []) or "none",
                spec.get("source", ""),
            )
        )
    if not ingredients:
        lines.append(_row("(none)", "", "", ""))
    ambiguous = [a for _, data in lexicon for a in data.get("ambiguous") or []]
    lines += ["", "**Names not recognised on purpose** (one brand, several compositions)", ""]
    lines += [_row("name", "country", "why", "source"), "|---|---|---|---|"]
    for entry in ambiguous:
        lines.append(
            _row(
                ", ".join(str(n) for n in entry.get("names") or []),
                entry.get("country", ""),
                entry.get("note", ""),
                entry.get("source", ""),
            )
        )
    if not ambiguous:
        lines.append(_row("(none)", "", "", ""))
    return lines


def _safety_rows(path: Path) -> list[str]:
    data = _load_yaml(path) if path.exists() else {}
    rows = [_row("rule", "drugs", "interaction partners", "sources"), "|---|---|---|---|"]
    for rule_id, spec in sorted((data or {}).get("rules", {}).items()):
        rows.append(
            _row(
                f"`{rule_id}`",
                ", ".join(f"`{d}`" for d in spec.get("drugs", ())),
                ", ".join(f"`{d}`" for d in spec.get("partners", ())),
                "; ".join(str(s) for s in spec.get("sources", ())),
            )
        )
    return rows


def generated_blocks(
    valueset_dir: Path = VALUESET_DIR,
    products_dir: Path = PRODUCTS_DIR,
    safety_file: Path = KNOWLEDGE_DIR / "safety.yaml",
) -> dict[str, str]:
    """The body of each generated block of docs/codes.md, by block name."""
    valuesets = _valuesets(valueset_dir)
    lexicon = _products(products_dir)
    by_section: dict[str, list[Mapping[str, Any]]] = {name: [] for name in SECTION_OF.values()}
    for vs in valuesets:
        if vs.get("applies_to") not in SECTION_OF:
            raise ProvenanceError(
                f"{vs['id']}.yaml: applies to {vs.get('applies_to')!r}, which has no table in "
                "docs/codes.md (add it to SECTION_OF in cds_service/devtools/provenance.py "
                "and a block to docs/codes.md)"
            )
        by_section[SECTION_OF[vs["applies_to"]]].append(vs)
    codes = sum(len(vs.get("codes") or []) for vs in valuesets)
    products = sum(len(data.get("products") or []) for _, data in lexicon)
    product_codes = sum(
        len(p.get("codes") or []) for _, data in lexicon for p in data.get("products") or []
    )
    summary = (
        f"{len(valuesets)} value sets, {codes} codes; product lexicon: {products} products "
        f"({product_codes} product codes) in {len(lexicon)} files."
    )
    blocks: dict[str, list[str]] = {
        "summary": [summary, "", *_index_rows(valuesets)],
        **{name: _code_rows(found) for name, found in by_section.items()},
        "products": _product_rows(lexicon),
        "safety": _safety_rows(safety_file),
    }
    return {name: "\n".join(lines) + "\n" for name, lines in blocks.items()}


def render(text: str, blocks: Mapping[str, str]) -> str:
    """`text` (docs/codes.md) with each generated block replaced; the prose is kept."""
    seen: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in blocks:
            raise ProvenanceError(f"docs/codes.md: unknown generated block {name!r}")
        seen.add(name)
        return match.group(1) + blocks[name] + match.group(4)

    out = _BLOCK.sub(replace, text)
    missing = sorted(set(blocks) - seen)
    if missing:
        raise ProvenanceError(
            "docs/codes.md: no place for the generated block(s) "
            + ", ".join(missing)
            + " (each sits between '<!-- BEGIN GENERATED name -->' and "
            + "'<!-- END GENERATED name -->')"
        )
    return out


def up_to_date(codes_md: Path = CODES_MD, **dirs: Path) -> bool:
    text = codes_md.read_text(encoding="utf-8")
    return render(text, generated_blocks(**dirs)) == text


# ----------------------------------------------------------------------------- citations


def _headings(path: Path) -> list[str]:
    return [m.group("title") for m in _HEADING.finditer(path.read_text(encoding="utf-8"))]


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def knowledge_files(cards_dir: Path) -> list[Path]:
    """The files whose citations must resolve: value sets, product lexicon, safety table and
    thresholds, card files and rule modules (their docstrings cite the seeds)."""
    return [
        *sorted(VALUESET_DIR.glob("*.yaml")),
        *sorted(PRODUCTS_DIR.glob("*.yaml")),
        *sorted(KNOWLEDGE_DIR.glob("*.yaml")),
        *sorted(cards_dir.glob("*.yaml")),
        *sorted(RULES_DIR.glob("*.py")),
    ]


def _where(path: Path) -> str:
    try:
        return str(path.relative_to(PROJECT_DIR))
    except ValueError:
        return path.name


def _seed_headings(sources_md: Path, problems: list[str]) -> dict[str, set[str]]:
    """Seed number -> the seed file names its heading in docs/sources.md gives."""
    seeds: dict[str, set[str]] = {}
    for title in _headings(sources_md):
        if found := re.match(r"seed\s+(\d{3})\b", title, re.IGNORECASE):
            named = set(_SEED_FILE_NAME.findall(title))
            seeds.setdefault(found.group(1), set()).update(named)
            problems += [
                f"{_where(sources_md)}: heading {title!r} names {name}, not a seed "
                f"{found.group(1)} file"
                for name in sorted(named)
                if not name.startswith(found.group(1) + "_")
            ]
    return seeds


def citation_problems(
    files: Iterable[Path], sources_md: Path = SOURCES_MD, codes_md: Path = CODES_MD
) -> tuple[list[str], int]:
    """(what does not resolve, one line each; how many citations were checked)."""
    problems = [
        f"{_where(doc)} is missing: the citations cannot resolve"
        for doc in (sources_md, codes_md)
        if not doc.exists()
    ]
    seeds = _seed_headings(sources_md, problems) if sources_md.exists() else None
    titles = _headings(codes_md) if codes_md.exists() else None
    sections = {m.group("number") for t in titles or () if (m := _NUMBERED.match(t))}
    checked = 0
    for path in files:
        text = path.read_text(encoding="utf-8")

        def problem(offset: int, what: str, text: str = text, path: Path = path) -> None:
            problems.append(f"{_where(path)} line {_line(text, offset)}: cites {what}")

        for m in _SEEDS.finditer(text):
            for number in re.findall(r"\d{3}", m.group(1)):
                checked += 1
                if seeds is not None and number not in seeds:
                    problem(
                        m.start(), f"seed {number}, which {_where(sources_md)} does not describe"
                    )
        for m in _SEED_FILE.finditer(text):
            checked += 1
            if seeds is not None and m.group(0) not in seeds.get(m.group(1), set()):
                problem(m.start(), f"{m.group(0)}, which {_where(sources_md)} does not describe")
        for m in _CODES_MD.finditer(text):
            checked += 1
            section, title = m.group("section"), m.group("title")
            if m.group("path") not in ("", "docs/"):
                problem(
                    m.start(),
                    f"{m.group('path')}codes.md, outside this repository; cite docs/codes.md"
                    + (f" §{section}" if section else ""),
                )
            if titles is None:
                continue
            if section and section not in sections:
                problem(
                    m.start(), f"codes.md §{section}, which is not a section of {_where(codes_md)}"
                )
            if title and not any(title.lower() in t.lower() for t in titles):
                problem(
                    m.start(), f'codes.md "{title}", which is not a heading of {_where(codes_md)}'
                )
    return problems, checked


# ----------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cds_service.devtools.provenance",
        description="Regenerate the tables of docs/codes.md from the value sets and the "
        "product lexicon (the prose around them is kept).",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 when docs/codes.md is out of date",
    )
    parser.add_argument("--codes-md", type=Path, default=CODES_MD, help=argparse.SUPPRESS)
    parser.add_argument("--valuesets-dir", type=Path, default=VALUESET_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--products-dir", type=Path, default=PRODUCTS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        blocks = generated_blocks(args.valuesets_dir, args.products_dir)
        text = args.codes_md.read_text(encoding="utf-8")
        new = render(text, blocks)
    except (OSError, ProvenanceError) as exc:
        print(f"provenance: {exc}", file=sys.stderr)
        return 2
    summary = blocks["summary"].splitlines()[0]
    if new == text:
        print(f"{args.codes_md.name} is up to date: {summary}")
        return 0
    if args.check:
        print(
            f"{args.codes_md} is out of date with the value sets or the product lexicon; "
            f"regenerate it: {REGENERATE}",
            file=sys.stderr,
        )
        return 1
    args.codes_md.write_text(new, encoding="utf-8")
    print(f"{args.codes_md.name} rewritten: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
