"""docs/status.schema.json as validators, for the unit and the integration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "status.schema.json"


def schema_validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    if definition is not None:
        schema = {**schema, "$ref": f"#/$defs/{definition}"}
        for key in ("required", "properties", "type", "title", "description"):
            schema.pop(key, None)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def validate_status(document: dict[str, Any]) -> None:
    schema_validator().validate(document)


def validate_health(document: dict[str, Any]) -> None:
    schema_validator("health_json").validate(document)


def validate_recovery(document: dict[str, Any]) -> None:
    schema_validator("recovery").validate(document)
