"""Offline STAC validation with stac-validator: core schemas from pystac's copies, extension schemas from
tests/fixtures/stac-extension-schemas (the official schemas, vendored with their licence; see the README there)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pystac.validation
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

CORE = Path(pystac.validation.__file__).parent / "jsonschemas"
EXTENSIONS = Path(__file__).parent / "fixtures" / "stac-extension-schemas"


def schema_map() -> dict[str, str]:
    mapping = {}
    for f in (CORE / "stac-spec" / "v1.1.0").glob("*.json"):
        for spec in ("item-spec", "collection-spec", "catalog-spec"):
            mapping[f"https://schemas.stacspec.org/v1.1.0/{spec}/json-schema/{f.name}"] = str(f)
    for name in ("Feature", "Geometry"):
        mapping[f"https://geojson.org/schema/{name}.json"] = str(CORE / "geojson" / f"{name}.json")
    for f in EXTENSIONS.glob("*.json"):  # <name>-v<version>.json: the URL the extension is published at
        name, version = f.stem.rsplit("-", 1)
        mapping[f"https://stac-extensions.github.io/{name}/{version}/schema.json"] = str(f)
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


def schema_errors(instance: Any, ref: str) -> list[str]:
    """What the schema at ``ref`` (a URL with a fragment, e.g. mlm's ``#/$defs/mlmItemFields``) finds wrong with
    ``instance``, its references resolved offline: for fields the extension schemas do not reach (an mlm
    description beside a collection's fields)."""
    resources = [
        (url, Resource.from_contents(json.loads(Path(path).read_text()), default_specification=DRAFT7))
        for url, path in schema_map().items()
    ]
    validator = jsonschema.Draft7Validator({"$ref": ref}, registry=Registry().with_resources(resources))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
