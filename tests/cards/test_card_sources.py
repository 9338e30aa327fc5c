"""Cards cite the label or the guideline itself, never a secondary drug-information site.

Issue 14: "no card cites a secondary web page where the label exists". Every card file in the
cards directory is read (a card added later is checked too): its `source.url`, its `links` and
its `references` must not name a known secondary drug-information site, and every web address
anywhere in a card file is https. Where the wording of a label section was read only in such a
copy, the card's evidence level says so in plain words (docs/knowledge.md, "Sources and their
verification"); the copy is never the card's link or reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.settings import DEFAULT_CARDS_DIR

# Secondary drug-information sites (copies or summaries of labels, drug databases): never the
# source of a card. Matched case-insensitively in the host of a URL and in reference text.
SECONDARY_SITES = (
    "druglib",
    "pill2trip",
    "drugs.com",
    "rxlist",
    "medscape.com",
    "healthscout",
    "globalrph",
    "pdr.net",
    "imedi.co.uk",
    "medine.co.uk",
    "rxreasoner",
    "120ty",
    "cancertherapyadvisor",
    "renalandurologynews",
    "webmd",
    "edren",
    "drugbank",
    "drugsdb",
    "medisite",
    "docavenue",
    "guide-medicament",
    "myhealthbox",
)

URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"')>\]]+", re.IGNORECASE)

CARD_FILES = sorted(p for p in Path(DEFAULT_CARDS_DIR).glob("*.yaml") if p.name != "_common.yaml")


def _texts(value: Any) -> Iterator[str]:
    """Every string in a reference entry ({en, fr} or a plain string)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def cited(card: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every URL and reference a card shows as its source."""
    source = card.get("source") or {}
    if url := source.get("url"):
        yield "source.url", url
    for i, link in enumerate(card.get("links") or ()):
        yield f"links[{i}].url", link.get("url", "")
    for i, reference in enumerate(card.get("references") or ()):
        for text in _texts(reference):
            yield f"references[{i}]", text


def secondary_sites_named(text: str) -> list[str]:
    lowered = text.lower()
    return [site for site in SECONDARY_SITES if site in lowered]


def test_the_card_files_are_found() -> None:
    names = {p.stem for p in CARD_FILES}
    assert {"colchicine-interaction", "probenecid-renal", "ccb-av-block"} <= names


@pytest.mark.parametrize("path", CARD_FILES, ids=lambda p: p.stem)
def test_no_card_cites_or_links_a_secondary_drug_information_site(path: Path) -> None:
    card = yaml.safe_load(path.read_text(encoding="utf-8"))
    offending = [
        f"{where}: {text!r} names {', '.join(sites)}"
        for where, text in cited(card)
        if (sites := secondary_sites_named(text))
    ]
    assert not offending, f"{path.name} cites secondary sites:\n" + "\n".join(offending)


@pytest.mark.parametrize("path", CARD_FILES, ids=lambda p: p.stem)
def test_every_web_address_in_a_card_file_is_https(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    insecure = [url for url in URL.findall(text) if not url.lower().startswith("https://")]
    assert not insecure, f"{path.name} has non-https addresses: {insecure}"
    card = yaml.safe_load(text)
    for where, url in cited(card):
        if where.endswith("url"):
            assert url.startswith("https://"), f"{path.name} {where}: {url!r} is not https"


def test_the_checks_catch_what_they_are_meant_to() -> None:
    card = {
        "source": {"url": "http://www.druglib.com/druginfo/minocin/"},
        "links": [{"label": {"en": "x", "fr": "x"}, "url": "https://pill2trip.com/medicine/x"}],
        "references": [{"en": "as reproduced at healthscout.com", "fr": "reproduit"}],
    }
    named = [(where, secondary_sites_named(text)) for where, text in cited(card)]
    assert named == [
        ("source.url", ["druglib"]),
        ("links[0].url", ["pill2trip"]),
        ("references[0]", ["healthscout"]),
        ("references[0]", []),
    ]
    assert (
        secondary_sites_named(
            "https://dailymed.nlm.nih.gov/dailymed/drugInfo.cfm?setid=49e65b60-ffc9-4ccd-9aec-29a462358d27"
        )
        == []
    )
    assert URL.findall("see http://www.healthscout.com/rxdetail/1 and https://x.org/a") == [
        "http://www.healthscout.com/rxdetail/1",
        "https://x.org/a",
    ]
