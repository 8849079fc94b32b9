"""The run manifest: what a run is (its key, model and parameters) and which of its outputs are finished.

``manifest.json`` at the root of a run's output is the one resume system of the jobs. It is written when a run
starts (what the run is) and again when it ends (every unit's status, derived). In between, every output unit (a
tile of a mapping run, a UTM zone of the indices job) is written first and then gets a small status object of its
own, ``status/<unit>.json`` (``done`` with its files, or ``failed`` with the error): a unit costs one small put,
not a rewrite of a manifest that grows with the run. Loading reads the manifest and then every status object
over it, so a run that stopped anywhere (even between a unit's files and its status: that unit is simply
redone) resumes from what is published. A rerun skips done units and redoes the rest. A run whose key (items,
model, parameters) differs from the manifest's is refused, so one output never mixes model versions or
parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pimc_ray.errors import OutputExistsError
from pimc_ray.storage import Store

__all__ = ["MANIFEST", "STATUS", "RunManifest", "publish_status", "status_entry"]

MANIFEST = "manifest.json"
#: Folder of the units' status objects, ``status/<unit>.json``.
STATUS = "status/"
MANIFEST_FORMAT = 1


def status_entry(status: str, **details: Any) -> dict[str, Any]:
    """A unit's status (``done`` with its files, ``failed`` with the error), stamped with the time."""
    return {"status": status, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **details}


def publish_status(store: Store, unit: str, entry: dict[str, Any]) -> None:
    """Write the status object of ``unit`` (after its files): the one put a finished unit costs. Whoever
    publishes the unit calls this (a mapping run's workers, for their tiles)."""
    store.put_json(entry, f"{STATUS}{unit}.json")


@dataclass
class RunManifest:
    """What a run is (key, model, parameters) and which tiles it has finished."""

    key: str
    model: str
    params: dict[str, Any]
    tiles: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, store: Store) -> RunManifest | None:
        """The run in ``store`` (None for a new output): its manifest, with every unit's status object over it."""
        data = store.get_json(MANIFEST)
        if data is None:
            return None
        tiles = dict(data.get("tiles", {}))
        keys = [key for key in store.list(STATUS) if key.endswith(".json")]
        for key, status in zip(keys, store.get_json_many(keys), strict=True):
            tiles[key.removeprefix(STATUS).removesuffix(".json")] = status
        return cls(data["key"], data["model"], data["params"], tiles)

    def publish(self, store: Store, unit: str) -> None:
        """Write the status object of ``unit`` as this manifest holds it (:func:`publish_status`)."""
        publish_status(store, unit, self.tiles[unit])

    def save(self, store: Store) -> None:
        """Write ``manifest.json``: at the start of a run, and at its end with every unit's status."""
        store.put_json(
            {
                "format": MANIFEST_FORMAT,
                "key": self.key,
                "model": self.model,
                "params": self.params,
                "tiles": self.tiles,
            },
            MANIFEST,
        )

    def done(self) -> set[str]:
        return {t for t, entry in self.tiles.items() if entry.get("status") == "done"}

    def check_same_run(self, key: str, model: str, where: str) -> None:
        """Refuse to add tiles of another model or other parameters to this output."""
        if model != self.model:
            raise OutputExistsError(
                f"{where} holds tiles made with {self.model}, not {model}; one mosaic must not mix model versions: "
                "write to a new --out"
            )
        if key != self.key:
            raise OutputExistsError(
                f"{where} holds a run with other parameters or items (run {self.key}, this one {key}); write to a "
                "new --out, or rerun with the same arguments to resume"
            )

    def check_same_layout(self, layout: dict[str, Any], where: str) -> None:
        """Refuse to rerun in place (``update``) over an output that holds another run: another spec's name,
        another area, tile size or set of products (``layout``, as written in ``params['layout']``)."""
        held = self.params.get("layout")
        if held == layout:
            return
        if held is None:
            what = (
                "a run that cannot be updated in place (made by a job without --update, or an older version)"
            )
        elif held.get("name") != layout.get("name"):
            what = f"the run of spec {held.get('name')!r}, not {layout.get('name')!r}"
        else:
            differ = sorted(k for k in layout if held.get(k) != layout[k])
            what = f"a run with another {', '.join(differ)}"
        raise OutputExistsError(
            f"{where} holds {what}; write this run to another output, or rerun the spec that made it"
        )

    def mark(self, tile_id: str, status: str, **details: Any) -> None:
        self.tiles[tile_id] = status_entry(status, **details)
