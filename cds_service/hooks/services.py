"""Service definitions: one entry per CDS service, read from ``services.yaml``.

Discovery returns exactly these definitions (spec fields only); invocation looks the service up
here to know its hook, its prefetch keys and the rules it runs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.terminology import LOINC, Terminology

SERVICES_FILE = Path(__file__).resolve().parent / "services.yaml"
# CDS Hooks extensions are namespaced; this one carries the version of the clinical knowledge.
KNOWLEDGE_VERSION_EXTENSION = "calcinosis-cds.knowledge-version"


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str]
    rules: tuple[str, ...]
    usage_requirements: str | None = None

    def discovery(self, knowledge_version: str | None = None) -> dict[str, Any]:
        """This service as the discovery endpoint describes it."""
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": dict(self.prefetch),
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        if knowledge_version:
            entry["extension"] = {KNOWLEDGE_VERSION_EXTENSION: knowledge_version}
        return entry


def _template(key: str, spec: Any, terminology: Terminology) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping) and spec.get("resource") == "Observation":
        codes = [
            f"{LOINC}|{code}" for vs in spec["valuesets"] for code in terminology.codes(vs, LOINC)
        ]
        # Newest first, so that a page limit never drops the latest results.
        return f"Observation?patient={{{{context.patientId}}}}&code={','.join(codes)}&_sort=-date"
    raise ValueError(f"services.yaml: prefetch {key!r} must be a query or an Observation spec")


def _flatten(items: Any) -> list[str]:
    """Rule lists may nest (a YAML anchor shares the safety rules between services)."""
    if isinstance(items, str):
        return [items]
    return [rule for item in items for rule in _flatten(item)]


@cache
def _read(path: Path) -> list[dict[str, Any]]:
    """The parsed file, read once per process (each engine, e.g. each worker or test app,
    builds its definitions from it)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_services(
    terminology: Terminology,
    path: Path = SERVICES_FILE,
    known_rules: Collection[str] | None = None,
) -> dict[str, ServiceDefinition]:
    """All service definitions, keyed by id; with `known_rules` (the engine passes its rule
    registry), a service naming any other rule is refused."""
    services: dict[str, ServiceDefinition] = {}
    for raw in _read(path):
        rules = _flatten(raw["rules"])
        unknown = [r for r in rules if known_rules is not None and r not in known_rules]
        if unknown:
            raise ValueError(f"services.yaml: {raw['id']} names unknown rules {unknown}")
        services[raw["id"]] = ServiceDefinition(
            id=raw["id"],
            hook=raw["hook"],
            title=raw["title"],
            description=raw["description"],
            prefetch={k: _template(k, v, terminology) for k, v in raw["prefetch"].items()},
            rules=tuple(rules),
            usage_requirements=raw.get("usageRequirements"),
        )
    return services
