"""JSON Schema validation of CDS Hooks payloads.

Every ``*.json`` file in the ``schemas`` folder next to this module is loaded once, at import,
into a :class:`referencing.Registry` keyed by the schema's ``$id``
(``https://calcinosis-cds.invalid/schemas/<file>``), so relative ``$ref``s between the files
resolve locally. The registry has no retrieval function: a ``$ref`` that is not in the folder
raises :class:`referencing.exceptions.Unresolvable`; nothing is ever fetched from the network.

Results are reported as :class:`Violation` values whose ``path`` uses a dotted/indexed notation
(``context.patientId``, ``cards[0].summary``; ``$`` for the root). For a missing property the
path names the missing property itself. Messages are short and never echo the offending value,
so they are safe to log or return to a CDS Client.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SCHEMA_BASE_URI",
    "Violation",
    "first_violation",
    "json_nesting_depth",
    "schema_names",
    "violations",
]

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_BASE_URI = "https://calcinosis-cds.invalid/schemas/"

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# bool before int: bool is a subclass of int.
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (dict, "object"),
    (list, "array"),
)


@dataclass(frozen=True)
class Violation:
    """One schema violation.

    ``path`` locates the problem, e.g. ``"context.patientId"`` or ``"cards[0].summary"``
    (``"$"`` for the root); ``message`` is a short human-readable explanation.
    """

    path: str
    message: str


def _load_schemas() -> dict[str, dict[str, Any]]:
    """Read and check every schema file; key them by file stem."""
    schemas: dict[str, dict[str, Any]] = {}
    for file in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(file.read_text(encoding="utf-8"))
        expected_id = SCHEMA_BASE_URI + file.name
        if contents.get("$id") != expected_id:
            raise RuntimeError(f"{file.name}: $id must be {expected_id!r}")
        Draft202012Validator.check_schema(contents)
        schemas[file.stem] = contents
    return schemas


_SCHEMAS = _load_schemas()
_REGISTRY: Registry = Registry().with_resources(
    (contents["$id"], Resource.from_contents(contents, default_specification=DRAFT202012))
    for contents in _SCHEMAS.values()
)
_VALIDATORS = {
    name: Draft202012Validator(contents, registry=_REGISTRY) for name, contents in _SCHEMAS.items()
}


def schema_names() -> list[str]:
    """Return the names (file stems) of all loaded schemas, sorted."""
    return sorted(_SCHEMAS)


def violations(schema: str, instance: Any, at: str = "") -> list[Violation]:
    """Return every violation of ``schema`` by ``instance``, sorted by path then message.

    ``schema`` is a file stem such as ``"request"`` or ``"context-patient-view"``; ``at`` is a
    path prefix for an instance that is part of a larger document (e.g. ``"context"``).
    Raises :class:`KeyError` for an unknown schema name.
    """
    found = {_to_violation(error, at) for error in _validator(schema).iter_errors(instance)}
    return sorted(found, key=lambda violation: (violation.path, violation.message))


def first_violation(schema: str, instance: Any, at: str = "") -> Violation | None:
    """Return the most relevant violation (``jsonschema.exceptions.best_match``), or ``None``.

    Arguments are as for :func:`violations`. The choice is deterministic for a given instance.
    """
    error = best_match(_validator(schema).iter_errors(instance))
    return None if error is None else _to_violation(error, at)


def _validator(schema: str) -> Draft202012Validator:
    try:
        return _VALIDATORS[schema]
    except KeyError:
        raise KeyError(f"unknown schema {schema!r}; known: {', '.join(schema_names())}") from None


def _to_violation(error: ValidationError, at: str) -> Violation:
    parts: list[str | int] = list(error.absolute_path)
    culprit = _culprit_property(error)
    if culprit is not None:
        parts.append(culprit)
    return Violation(path=_format_path(at, parts), message=_message(error, culprit))


def _culprit_property(error: ValidationError) -> str | None:
    """Name the property a required/dependentRequired/additionalProperties/not error is about."""
    instance, value = error.instance, error.validator_value
    if not isinstance(instance, dict):
        return None
    candidates: Iterable[str] = ()
    if error.validator == "required":
        candidates = (name for name in value if name not in instance)
    elif error.validator == "dependentRequired":
        candidates = (
            dep
            for key, deps in value.items()
            if key in instance
            for dep in deps
            if dep not in instance
        )
    elif error.validator == "additionalProperties" and value is False:
        declared = error.schema.get("properties", {})
        patterns = error.schema.get("patternProperties", {})
        candidates = (
            key
            for key in instance
            if key not in declared and not any(re.search(p, key) for p in patterns)
        )
    elif error.validator == "not" and isinstance(value, dict) and set(value) == {"required"}:
        candidates = (name for name in value["required"] if name in instance)
    names = list(candidates)
    # jsonschema reports one error per missing property: prefer the one its message names.
    named = [name for name in names if error.message.startswith(repr(name))]
    return (named or names or [None])[0]


def _format_path(at: str, parts: Iterable[str | int]) -> str:
    path = at
    for part in parts:
        if isinstance(part, int):
            path = f"{path or '$'}[{part}]"
        elif _PLAIN_KEY.match(part):
            path = f"{path}.{part}" if path else part
        else:
            path = f"{path or '$'}[{json.dumps(part)}]"
    return path or "$"


def _json_type(instance: Any) -> str:
    """Name the JSON type of a decoded JSON value."""
    if instance is None:
        return "null"
    for python_type, name in _JSON_TYPES:
        if isinstance(instance, python_type):
            return name
    return type(instance).__name__


def _message(error: ValidationError, culprit: str | None) -> str:
    """Build a short message that describes the constraint but never echoes the instance."""
    kind, value, instance = error.validator, error.validator_value, error.instance
    if culprit is not None:
        if kind == "required":
            return f"{culprit!r} is a required property"
        if kind == "dependentRequired":
            trigger = next(
                key for key, deps in value.items() if culprit in deps and key in instance
            )
            return f"{culprit!r} is required when {trigger!r} is present"
        if kind in {"additionalProperties", "not"}:
            return f"property {culprit!r} is not allowed here"
    if kind == "type":
        expected = " or ".join([value] if isinstance(value, str) else value)
        return f"expected {expected}, got {_json_type(instance)}"
    if kind == "enum":
        return f"must be one of {', '.join(json.dumps(item) for item in value)}"
    if kind == "const":
        return f"must be {json.dumps(value)}"
    if kind == "pattern":
        examples = error.schema.get("examples")
        if examples:
            return f"does not have the expected format, e.g. {examples[0]}"
        return f"does not match pattern {value!r}"
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters long"
    if kind == "maxLength":
        return f"must be at most {value} characters long (got {len(instance)})"
    if kind in {"minItems", "minProperties"}:
        noun = "items" if kind == "minItems" else "properties"
        return "must not be empty" if value == 1 else f"must have at least {value} {noun}"
    if kind in {"anyOf", "oneOf"}:
        return "does not match any of the allowed alternatives"
    # Anything else: describe the constraint (taken from the schema), not the instance.
    message = f"violates {kind} {json.dumps(value, sort_keys=True)}"
    return message if len(message) <= 120 else message[:117] + "..."


# --------------------------------------------------------------------------- nesting depth

# Every byte but the quote and the brackets is deleted to make the skeleton of a JSON text, and
# "{" / "}" are read as "[" / "]": only the depth matters, not which kind of bracket nests.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STRING_SKELETON = re.compile(rb'"[^"]*"')


def json_nesting_depth(raw: bytes, limit: int | None = None) -> int:
    """How deeply a JSON text nests, without parsing it (strings do not count).

    Fast on large bodies: only C-level byte operations, no Python loop per byte. Escaped
    backslashes, then escaped quotes are dropped (left to right, as a JSON reader pairs them),
    then every byte but quotes and brackets, braces becoming square brackets; the strings left
    (now ``""``, or quotes around the brackets a string held) are removed; then each pass removes
    the innermost ``[]`` pairs (``bytes.replace``: the pairs it makes by removing are left for
    the next pass), one nesting level per pass. With ``limit``, counting stops past it (the
    result is then some value above ``limit``). On a text that is not JSON (unbalanced brackets)
    the remaining brackets are counted one by one.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Between two strings there is always a byte that is deleted here, so removing adjacent
    # quote pairs keeps every other quote paired with its own string.
    skeleton = raw.translate(_SQUARE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRING_SKELETON.sub(b"", skeleton)
    depth = 0
    while skeleton and (limit is None or depth <= limit):
        shorter = skeleton.replace(b"[]", b"")
        if len(shorter) == len(skeleton):  # unbalanced: not JSON
            level = deepest = 0
            for byte in skeleton:
                level += 1 if byte == 0x5B else -1  # "["
                deepest = max(deepest, level)
            return depth + deepest
        skeleton = shorter
        depth += 1
    return depth
