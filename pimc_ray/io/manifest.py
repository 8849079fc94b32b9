"""The run manifest: what a run is (its key, model and parameters) and which of its outputs are finished.

``manifest.json`` at the root of a run's output is the one resume system of the jobs. Every output unit (a tile of a
mapping run, a UTM zone of the indices job) is written first and marked ``done`` after; a rerun skips done units
and redoes the rest. A run whose key (items, model, parameters) differs from the manifest's is refused, so one
output never mixes model versions or parameters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pimc_ray.errors import OutputExistsError
from pimc_ray.io.storage import Store

__all__ = ["MANIFEST", "RunManifest"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass
class RunManifest:
    """What a run is (key, model, parameters) and which tiles it has finished."""

    key: str
    model: str
    params: dict[str, Any]
    tiles: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, store: Store) -> RunManifest | None:
        data = store.get_json(MANIFEST)
        if data is None:
            return None
        return cls(data["key"], data["model"], data["params"], data.get("tiles", {}))

    def save(self, store: Store) -> None:
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

    def mark(self, tile_id: str, status: str, **details: Any) -> None:
        self.tiles[tile_id] = {
            "status": status,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **details,
        }
