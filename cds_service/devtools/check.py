"""Consistency checks of the clinical knowledge, for people (`calcinosis-cds check-knowledge`).

Each check loads part of the knowledge the way the service does and says, in a sentence, what
it found. A check that fails lists what is wrong and where, so that whoever edits a card, a
value set or a threshold can fix it before the service refuses to start (or, worse, starts and
answers wrongly).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time

from cds_service import rules
from cds_service.cards import CardContentError, CardLibrary, load_library
from cds_service.devtools import provenance
from cds_service.devtools.fixture_set import list_fixtures
from cds_service.hooks.services import load_services
from cds_service.knowledge.loader import thresholds
from cds_service.knowledge.safety import table_valuesets
from cds_service.settings import Settings
from cds_service.terminology import VALUESET_DIR, Terminology, TerminologyError

LANGUAGES = ("en", "fr")
_SEED = re.compile(r"\bseed 00\d\b")


@dataclass
class CheckResult:
    name: str
    ok: bool
    summary: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth a look, not wrong


class _Failed(Exception):
    def __init__(self, summary: str, problems: list[str]) -> None:
        super().__init__(summary)
        self.summary = summary
        self.problems = problems


def _fail_if(problems: list[str], summary: str) -> None:
    if problems:
        raise _Failed(summary, problems)


class KnowledgeChecks:
    """The checks, sharing what they load (each piece is loaded once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._terminology: Terminology | None = None
        self._library: CardLibrary | None = None
        self._notes: list[str] = []
        self._broken: set[str] = set()  # what failed to load, reported once

    # Loaded on demand: a check that depends on a broken piece reports it, not a traceback.
    @property
    def terminology(self) -> Terminology:
        if "value sets" in self._broken:
            raise _Failed("not run: needs the value sets (see above)", [])
        if self._terminology is None:
            try:
                self._terminology = Terminology.load()
            except TerminologyError as exc:
                self._broken.add("value sets")
                raise _Failed("the value sets do not load", [str(exc)]) from None
        return self._terminology

    @property
    def library(self) -> CardLibrary:
        if "card files" in self._broken:
            raise _Failed("not run: needs the card files (see above)", [])
        if self._library is None:
            try:
                self._library = load_library(self.settings.cards_dir, self.terminology)
            except CardContentError as exc:
                self._broken.add("card files")
                raise _Failed("the card files do not load", [str(exc)]) from None
        return self._library

    def value_sets(self) -> str:
        vs = self.terminology.valuesets
        problems = [
            f"{v.id}: {c.system} {c.code} has no display or no note of where it was verified"
            for v in vs.values()
            for c in v.concepts
            if not c.display or len(c.source) <= 10
        ]
        problems += [
            f"{v.id}: no code and no text phrase"
            for v in vs.values()
            if not v.concepts and not v.phrases
        ]
        files = {p.stem for p in VALUESET_DIR.glob("*.yaml")}
        problems += [f"{name}.yaml: not loaded as a value set" for name in sorted(files - set(vs))]
        _fail_if(problems, "value sets are incomplete")
        codes = sum(len(v.concepts) for v in vs.values())
        return f"{len(vs)} value sets, {codes} codes, each with its display and its verification"

    def cards(self) -> str:
        library = self.library
        declared = set(library.cards)
        wanted = set(rules.RULES) | set(rules.SERVICE_CARDS)
        problems = [
            f"rule {r}: no card file in {self.settings.cards_dir}"
            for r in sorted(wanted - declared)
        ]
        problems += [f"{r}.yaml: no rule of this id" for r in sorted(declared - wanted)]
        _fail_if(problems, "card files and rules do not match")
        return (
            f"{len(declared)} card files, complete in {' and '.join(LANGUAGES)}, one per rule "
            f"(knowledge {library.version})"
        )

    def citations(self) -> str:
        problems = []
        for rule_id, content in sorted(self.library.cards.items()):
            if rule_id in rules.SERVICE_CARDS:
                continue
            data = content.data
            cited = " ".join(str(ref.get("en", "")) for ref in data.get("references", [])) + str(
                data.get("source", {}).get("label", {}).get("en", "")
            )
            if not _SEED.search(cited):
                problems.append(f"{rule_id}: cites none of the source documents (seed 00x)")
            for lang in LANGUAGES:
                if not str(data.get("evidence_level", {}).get(lang, "")).strip():
                    problems.append(f"{rule_id}: no evidence level in {lang}")
            url = str(data.get("source", {}).get("url", ""))
            if url and not url.startswith("https://"):
                self._notes.append(f"{rule_id}: source link is plain http ({url})")
        # Every citation of the knowledge files resolves inside the repository: a seed in
        # docs/sources.md, "codes.md §N" in a section of docs/codes.md (issue 11, §5).
        unresolved, cited = provenance.citation_problems(
            provenance.knowledge_files(self.settings.cards_dir)
        )
        problems += unresolved
        _fail_if(problems, "some cards do not cite their sources, or a citation does not resolve")
        self._note_stale_codes_table()
        return (
            "every card cites a source document and states its evidence level in en and fr; "
            f"{cited} citations resolve in docs/sources.md and docs/codes.md"
        )

    def _note_stale_codes_table(self) -> None:
        try:
            stale = not provenance.up_to_date()
        except (OSError, provenance.ProvenanceError) as exc:
            self._notes.append(f"docs/codes.md cannot be regenerated: {exc}")
            return
        if stale:
            self._notes.append(
                "docs/codes.md is out of date with the value sets or the product lexicon: "
                f"run {provenance.REGENERATE}"
            )

    def services(self) -> str:
        try:
            services = load_services(self.terminology, known_rules=rules.RULES)
        except (ValueError, KeyError) as exc:
            raise _Failed("services.yaml does not load", [str(exc)]) from None
        problems = [
            f"{s.id}: rule {r} has no card"
            for s in services.values()
            for r in s.rules
            if r not in self.library.cards
        ]
        unknown = table_valuesets() - set(self.terminology.valuesets)
        problems += [f"knowledge/safety.yaml: unknown value set {v}" for v in sorted(unknown)]
        try:
            thresholds()
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"knowledge/thresholds.yaml: {exc}")
        _fail_if(problems, "services, safety table or thresholds are inconsistent")
        used = {r for s in services.values() for r in s.rules}
        return (
            f"{len(services)} services ({', '.join(s.hook for s in services.values())}) "
            f"run {len(used)} rules; safety table and thresholds load"
        )

    def fixtures(self) -> str:
        """Every fixture patient still gets exactly the cards its expected file lists, through
        the whole pipeline (in memory, the clock at the date the fixture is anchored at)."""
        from cds_service.engine import CdsEngine
        from cds_service.store import Store

        self.library  # noqa: B018 - the engine needs the cards: a broken card file is reported
        found = [f for f in list_fixtures(self.settings.fixtures_dir) if f.expected is not None]
        if not found:
            return f"no fixtures in {self.settings.fixtures_dir}: nothing replayed"
        problems = []
        for as_of in sorted({f.as_of for f in found}, key=str):
            day = as_of or datetime.now(UTC).date()
            noon = datetime.combine(day, time(12, 0), tzinfo=UTC)
            settings = replace(
                self.settings, database_url="sqlite://", clock=lambda noon=noon: noon
            )
            engine = CdsEngine(settings, Store.from_url(settings.database_url))
            try:
                engine.store.ensure_schema()
                for fixture in (f for f in found if f.as_of == as_of):
                    service = next(s for s in engine.services.values() if s.hook == fixture.hook)
                    issued = engine.evaluate(service.id, fixture.request(), "en").issued
                    got = tuple(sorted((c.rule_id, c.variant, c.indicator) for c in issued))
                    if got != fixture.expected:
                        problems.append(
                            f"{fixture.hook}/{fixture.name}: expected {_cards(fixture.expected)}, "
                            f"got {_cards(got)}"
                        )
            finally:
                engine.close()
        _fail_if(problems, "some fixtures no longer get their expected cards")
        hooks = Counter(f.hook for f in found)
        counts = ", ".join(f"{n} {hook}" for hook, n in hooks.items())
        return f"{len(found)} fixtures ({counts}) get exactly their expected cards"

    def run(self) -> Iterator[CheckResult]:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("value sets", self.value_sets),
            ("card files", self.cards),
            ("citations", self.citations),
            ("services", self.services),
            ("fixtures", self.fixtures),
        ]
        for name, step in steps:
            self._notes = []
            try:
                yield CheckResult(name, True, step(), notes=self._notes)
            except _Failed as failed:
                yield CheckResult(name, False, failed.summary, failed.problems, self._notes)


def _cards(cards: tuple[tuple[str, str, str], ...] | None) -> str:
    return (
        ", ".join(f"{rule}/{variant} ({indicator})" for rule, variant, indicator in cards or ())
        or "no card"
    )
