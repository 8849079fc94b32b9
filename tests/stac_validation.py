"""Offline STAC validation with stac-validator: core schemas from pystac's copies, extension schemas from
tests/fixtures/stac-extension-schemas (minimal versions of the fields pimc-ray writes; see the README there)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pystac.validation

CORE = Path(pystac.validation.__file__).parent / "jsonschemas"
EXTENSIONS = Path(__file__).parent / "fixtures" / "stac-extension-schemas"


def schema_map() -> dict[str, str]:
    mapping = {}
    for f in (CORE / "stac-spec" / "v1.1.0").glob("*.json"):
        for spec in ("item-spec", "collection-spec", "catalog-spec"):
            mapping[f"https://schemas.stacspec.org/v1.1.0/{spec}/json-schema/{f.name}"] = str(f)
    for name in ("Feature", "Geometry"):
        mapping[f"https://geojson.org/schema/{name}.json"] = str(CORE / "geojson" / f"{name}.json")
    for f in EXTENSIONS.glob("*.json"):
        mapping[json.loads(f.read_text())["$id"]] = str(f)
    return mapping


def validate(path: str | Path) -> tuple[bool, list[Any]]:
    """``(valid, messages)`` of stac-validator on a STAC JSON file: the core schema, then every extension's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from stac_validator.validate import StacValidate

        messages, valid = [], True
        for mode in ({"core": True}, {"extensions": True}):
            validator = StacValidate(str(path), schema_map=schema_map(), **mode)
            valid = bool(validator.run()) and valid
            messages += validator.message
        return valid, messages
