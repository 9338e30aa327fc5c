"""The service's OpenAPI document (cds_service/hooks/openapi.yaml), for the tests.

- `DOCUMENT`: the document as loaded; `validate_body(schema_ref, body)` checks a body against a
  schema of the document (its `$ref`s resolve inside the document, nothing is fetched).
- `documented_statuses(path, method)`: the statuses the document allows for a request.
- `embedded_schemas()`: what components/schemas must hold for the JSON Schema files of
  cds_service/hooks/schemas/ (`python -m tests.openapi_doc` prints it as YAML, to paste).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Set
from functools import cache
from typing import Any

import yaml
from flask import Flask
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cds_service.hooks.validation import SCHEMA_BASE_URI, SCHEMA_DIR

OPENAPI_FILE = SCHEMA_DIR.parent / "openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
DOCUMENT_URI = "urn:calcinosis-cds:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# JSON Schema file stem -> its name under components/schemas.
EMBEDDED = {
    "request": "Request",
    "context-patient-view": "ContextPatientView",
    "context-order-select": "ContextOrderSelect",
    "context-order-sign": "ContextOrderSign",
    "card": "Card",
    "response": "Response",
    "discovery": "Discovery",
    "feedback": "Feedback",
}


def _rewrite_ref(ref: str, stem: str) -> str:
    """A $ref of schema file `stem` as a pointer into the OpenAPI document."""
    target, _, fragment = ref.partition("#")
    target = target.removeprefix(SCHEMA_BASE_URI)
    name = EMBEDDED[target.removesuffix(".json") if target else stem]
    return f"#/components/schemas/{name}{fragment}"


def _embed(node: Any, stem: str) -> Any:
    if isinstance(node, dict):
        return {
            key: _rewrite_ref(value, stem) if key == "$ref" else _embed(value, stem)
            for key, value in node.items()
            if key not in ("$id", "$schema")
        }
    if isinstance(node, list):
        return [_embed(item, stem) for item in node]
    return node


def embedded_schemas() -> dict[str, Any]:
    """components/schemas entries for the JSON Schema files, $refs pointing into the document."""
    result = {}
    for stem, name in EMBEDDED.items():
        contents = json.loads((SCHEMA_DIR / f"{stem}.json").read_text(encoding="utf-8"))
        result[name] = _embed(contents, stem)
    return result


# ----------------------------------------------------------------------------- validation

_REGISTRY = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


@cache
def _validator(schema_ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": DOCUMENT_URI + schema_ref}, registry=_REGISTRY)


def schema_errors(schema_ref: str, body: Any) -> list[str]:
    """Violations of the document's schema `schema_ref` (e.g. `#/components/schemas/Response`)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message[:200]}"
        for e in _validator(schema_ref).iter_errors(body)
    ]


def resolve(ref: str) -> Any:
    """The node a local `#/...` pointer names in the document (KeyError if none)."""
    node: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        node = resolve(node["$ref"])
    return node


# ----------------------------------------------------------------------------- routes


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + r"\Z"
    )


PATH_PATTERNS = [(template, _template_regex(template)) for template in DOCUMENT["paths"]]


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(path template, METHOD) -> operation, for every documented operation."""
    return {
        (path, method.upper()): operation
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def match_path(path: str) -> str | None:
    """The documented path template a concrete request path falls under, if any."""
    return next((template for template, rx in PATH_PATTERNS if rx.match(path)), None)


def _responses(path: str, method: str, unserved: Set[str] = frozenset()) -> dict[str, Any]:
    """The responses the document gives a request (path percent-decoded), by status.

    An undocumented path answers 404 (components/responses/NotFound), and so does a documented
    one in `unserved` (path templates the app under test does not serve yet); a method a
    documented path does not serve answers 405 (components/responses/MethodNotAllowed), except
    HEAD on a GET path, which answers like GET (without a body).
    """
    components = DOCUMENT["components"]["responses"]
    template = match_path(path)
    if template is None or template in unserved:
        return {"404": components["NotFound"]}
    method = method.upper()
    operation = operations().get((template, "GET" if method == "HEAD" else method))
    if operation is None:
        return {"405": components["MethodNotAllowed"]}
    return {status: deref(response) for status, response in operation["responses"].items()}


def documented_statuses(path: str, method: str, unserved: Set[str] = frozenset()) -> set[int]:
    """The statuses the document allows for a request."""
    return {int(status) for status in _responses(path, method, unserved)}


def documented_response(
    path: str, method: str, status: int, unserved: Set[str] = frozenset()
) -> dict[str, Any]:
    """The response object the document gives a request and status (KeyError if none)."""
    return _responses(path, method, unserved)[str(status)]


def unserved_paths(app: Flask) -> set[str]:
    """Documented path templates the app does not route (e.g. a route still being added)."""
    served = {rule.rule.replace("<", "{").replace(">", "}") for rule in app.url_map.iter_rules()}
    return set(DOCUMENT["paths"]) - served


def response_schema_ref(path: str, method: str, status: int) -> str | None:
    """The `$ref` of the JSON body schema documented for a response, if it names one."""
    template = match_path(path)
    operation = operations().get((template or "", method.upper()))
    if operation is None:
        return None
    response = deref(operation["responses"].get(str(status)))
    schema = ((response or {}).get("content") or {}).get("application/json", {}).get("schema")
    return schema.get("$ref") if isinstance(schema, dict) else None


def embedded_yaml() -> str:
    """The embedded schemas as YAML, indented to sit under components/schemas."""
    text = yaml.safe_dump(embedded_schemas(), sort_keys=False, allow_unicode=True, width=92)
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(True))


if __name__ == "__main__":
    sys.stdout.write(embedded_yaml())
