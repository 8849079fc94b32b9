# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How far is a run? Its status layer
#
# A scheduled run (`pimc run execute`, the monthly RayJob of `infra/k8s/`) keeps a status layer beside its
# `collection.json` and rewrites it every 30 s while tiles come back:
#
# - `status.geojson`: every tile of the run with its status (`pending`, `done`, `unchanged`, `failed`), version,
#   pixels, time and error; `pimc:counts` (tiles per status) and `pimc:updated` on the collection;
# - `status.png`: the same as a picture, on a lon/lat grid spanning the GeoJSON's `bbox`.
#
# This notebook reads both, while the run goes on or after it. The collection is written only at the end of a
# run, so `PIMC_RUN` may name the run's folder or prefix (the spec's `output`) as well as its `collection.json`.
# A run of the mapping jobs (`make demo`, `jobs/embed_aoi.py`) keeps no status layer; for one, the notebook
# shows its tiles from `manifest.json` and the items instead.
#
# | variable | what |
# |---|---|
# | `PIMC_RUN` | the run's folder, prefix or `collection.json`: `s3://pimc-maps/europe-monthly` |
# | `PIMC_FIGURES` | folder the figures are saved in (default `figures/` here) |

# %% tags=["parameters"]
# ruff: noqa: E402
import os

RUN = os.environ.get("PIMC_RUN", "")
FIGURES = os.environ.get("PIMC_FIGURES", "figures")
DPI = 100

# %%
import io

import matplotlib.pyplot as plt
import numpy as np
import shapely.geometry
from matplotlib.collections import PolyCollection
from matplotlib.patches import Patch

from pimc_ray.errors import StorageError
from pimc_ray.explore import figures_folder, run_location
from pimc_ray.runs.status import COLORS, STATES, STATUS_GEOJSON, STATUS_PNG
from pimc_ray.storage import normalize_uri, open_store, split_uri

location = normalize_uri(run_location(RUN))
store = open_store(split_uri(location)[0] if location.endswith(".json") else location)
figures = figures_folder(FIGURES)

layer = store.get_json(STATUS_GEOJSON)
picture = store.get_bytes(STATUS_PNG)
if layer is None:  # a run without a status layer: its tiles from the manifest and the items
    manifest = store.get_json("manifest.json")
    if manifest is None:
        raise StorageError(
            f"neither {store.uri(STATUS_GEOJSON)} nor {store.uri('manifest.json')} exists: {location} holds no "
            "run yet; set PIMC_RUN to the output of a run (a spec's `output`)"
        )
    features = []
    for tile, entry in sorted(manifest["tiles"].items()):
        item = store.get_json(f"tiles/{tile}/item.json")
        if item is None:  # a tile that never published has no footprint here
            continue
        status = "done" if entry.get("status") == "done" else "failed"
        props = {"tile_id": tile, "status": status} | {
            k: entry.get(k) for k in ("version", "pixels", "at", "error")
        }
        features.append({"type": "Feature", "id": tile, "geometry": item["geometry"], "properties": props})
    counts = {s: sum(f["properties"]["status"] == s for f in features) for s in STATES}
    layer = {"type": "FeatureCollection", "features": features, "pimc:counts": counts, "pimc:updated": None}
    print(f"{store.uri('')} has no status layer (not a scheduled run): its tiles from manifest.json")
updated = layer.get("pimc:updated")
counts = layer.get("pimc:counts", {})
total = sum(counts.values())
print(f"{store.uri('')}: {total} tiles, updated {updated}")
for state in STATES:
    print(f"  {state:10s} {counts.get(state, 0):7d}  {100 * counts.get(state, 0) / max(total, 1):5.1f} %")

# %% [markdown]
# ## Failed tiles
#
# A rerun of the same spec maps them again; those with a version keep their older version published meanwhile.

# %%
failed = [f["properties"] for f in layer["features"] if f["properties"]["status"] == "failed"]
for props in failed[:50]:
    print(f"{props['tile_id']}  version kept: {props.get('version')}  error: {props.get('error')}")
print(f"{len(failed)} failed tiles" + (" (the first 50 above)" if len(failed) > 50 else ""))

# %% [markdown]
# ## The map
#
# Left, each tile's area (cut to its UTM zone and the region) in its status's colour, from `status.geojson`;
# right, `status.png` as the run wrote it, placed on the GeoJSON's `bbox`.

# %%
colours = {s: np.array(rgb) / 255 for s, rgb in COLORS.items()}
outlines, faces = [], []  # one polygon collection: a continent's 100,000 tiles draw in seconds
for feature in layer["features"]:
    shape = shapely.geometry.shape(feature["geometry"])
    for part in getattr(shape, "geoms", [shape]):
        if part.geom_type == "Polygon":
            outlines.append(np.asarray(part.exterior.coords))
            faces.append(colours[feature["properties"]["status"]])
west, south, east, north = (
    layer.get("bbox")
    or shapely.geometry.shape(
        {"type": "GeometryCollection", "geometries": [f["geometry"] for f in layer["features"]]}
    ).bounds
)

fig, axes = plt.subplots(1, 2, figsize=(14, 6), dpi=DPI, layout="constrained")
edges = 0.3 if len(outlines) < 5000 else 0.0
axes[0].add_collection(PolyCollection(outlines, facecolors=faces, edgecolors="white", linewidths=edges))
pad = 0.02 * max(east - west, north - south)
axes[0].set_xlim(west - pad, east + pad)
axes[0].set_ylim(south - pad, north + pad)
axes[0].set_aspect(1 / np.cos(np.radians((south + north) / 2)))  # degrees of longitude shrink with latitude
axes[0].set_title(f"status.geojson ({updated})")
axes[0].set_xlabel("longitude")
axes[0].set_ylabel("latitude")
axes[0].legend(
    handles=[Patch(color=colours[s], label=f"{s} ({counts.get(s, 0)})") for s in STATES],
    loc="best",
    fontsize=8,
)
if picture is not None:
    image = plt.imread(io.BytesIO(picture), format="png")
    axes[1].imshow(image, extent=(west, east, south, north), interpolation="nearest")
    axes[1].set_xlim(axes[0].get_xlim())
    axes[1].set_ylim(axes[0].get_ylim())
    axes[1].set_aspect(axes[0].get_aspect())
    axes[1].set_title("status.png")
else:
    axes[1].set_axis_off()
    axes[1].text(0.5, 0.5, "no status.png: not a scheduled run", ha="center", va="center")
fig.savefig(figures / "status_map.png", dpi=DPI)
plt.show()
