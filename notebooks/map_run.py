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
# # A run on an interactive map
#
# The run's layers on a Leaflet map made with [folium](https://python-visualization.github.io/folium/): the
# embeddings in false colour, the classes, their confidence, the QA layer, the tiles (click one for its id and
# version) and, for a scheduled run, its status layer (`status.geojson`). Switch layers in the top-right control.
#
# **Why folium, and overlays rather than a tile server.** Each raster layer is one picture read from the
# run's mosaics within a pixel budget (an overview, as in `explore_run`), warped to Web Mercator and put in
# the page as a PNG data URI. So the map needs no tile server running beside the notebook (localtileserver and
# titiler need one, and bring a web framework along), works the same for a run in a folder or in a bucket, and
# the page saved in `PIMC_FIGURES/map.html` is self-contained: it opens later in any browser, and needs no
# network for the run's layers. The map starts without a basemap, which would need the internet: set
# `PIMC_BASEMAP=1` to add OpenStreetMap's. Leaflet's own script comes from a CDN when the page opens; on a
# machine without the internet point `PIMC_LEAFLET` to a folder holding `leaflet.js` and `leaflet.css`
# (e.g. `/usr/share/javascript/leaflet` from Debian's `libjs-leaflet`).
#
# For full resolution at any zoom, open the mosaics (`mosaic_*.gti.gpkg` or `.vrt`) in QGIS, or serve them
# with a tile server.
#
# | variable | what |
# |---|---|
# | `PIMC_RUN` | the run's `collection.json` (or its folder), local or `s3://` |
# | `PIMC_FIGURES` | folder `map.html` is saved in (default `figures/` here) |
# | `PIMC_MAX_PIXELS` | pixels per band of each layer's picture (default 250,000: keeps the page small) |
# | `PIMC_BASEMAP` | `1` to add OpenStreetMap's basemap (needs the internet) |
# | `PIMC_LEAFLET` | a local folder with `leaflet.js` and `leaflet.css`, for a machine without the internet |

# %% tags=["parameters"]
# ruff: noqa: E402
import os

RUN = os.environ.get("PIMC_RUN", "")
FIGURES = os.environ.get("PIMC_FIGURES", "figures")
MAX_PIXELS = int(os.environ.get("PIMC_MAX_PIXELS", "250000"))
BASEMAP = os.environ.get("PIMC_BASEMAP", "") == "1"
LEAFLET = os.environ.get("PIMC_LEAFLET", "")

# %%
from pathlib import Path

import folium
import matplotlib
import numpy as np

from pimc_ray.explore import (
    Raster,
    class_rgba,
    figures_folder,
    open_run,
    pca_rgb,
    png_data_uri,
    read_raster,
    to_web_mercator,
)

run = open_run(RUN)
figures = figures_folder(FIGURES)
legend = run.legend()
print(f"run {run.location}: {len(run.items)} tiles in EPSG {run.zones}")

# %% [markdown]
# ## The layers, zone by zone
#
# Each zone's mosaics are read once (classes and QA on one grid, the embedding coarser if it has many bands) and
# each picture is warped to Web Mercator, the projection a Leaflet map shows.

# %%
viridis, magma = matplotlib.colormaps["viridis"], matplotlib.colormaps["magma"]


def overlay(picture: np.ndarray, raster: Raster) -> tuple[str, list[list[float]]]:
    """A ``(y, x, 4)`` uint8 picture on ``raster``'s grid as a PNG data URI and its [[south, west], [north, east]]
    in Web Mercator."""
    on_grid = Raster(np.moveaxis(picture, -1, 0), raster.transform, raster.crs, 0)
    warped = to_web_mercator(on_grid)
    west, south, east, north = warped.lonlat_bounds()
    return png_data_uri(np.moveaxis(warped.data, 0, -1)), [[south, west], [north, east]]


def scalar_rgba(values: np.ndarray, ok: np.ndarray, cmap, vmin: float, vmax: float) -> np.ndarray:
    """Values in a colour map's colours (uint8 RGBA), transparent where not ``ok``."""
    rgba = (cmap(np.clip((values - vmin) / max(vmax - vmin, 1e-9), 0, 1)) * 255).astype(np.uint8)
    rgba[~ok] = 0
    return rgba


layers: dict[str, list[tuple[str, list[list[float]]]]] = {}
with run.gdal_env():
    for zone in run.zones:
        emb = read_raster(run.mosaic("embedding", zone), max_pixels=MAX_PIXELS, resampling="average")
        cls = read_raster(run.mosaic("classes", zone), max_pixels=MAX_PIXELS)
        qa = read_raster(run.mosaic("qa", zone), factor=cls.factor)
        classes, confidence, valid = cls.data[0], cls.data[1].astype(float), qa.data[0].astype(float)
        pca = (pca_rgb(emb.data)[0] * 255).astype(np.uint8)
        layers.setdefault("embedding (PCA)", []).append(overlay(pca, emb))
        layers.setdefault("classes", []).append(overlay(class_rgba(classes, legend), cls))
        layers.setdefault("confidence (%)", []).append(
            overlay(scalar_rgba(confidence, classes > 0, viridis, 0, 100), cls)
        )
        top = float(valid.max()) if valid.any() else 1.0
        layers.setdefault("QA: cloud-free observations", []).append(
            overlay(scalar_rgba(valid, valid > 0, magma, 0, top), qa)
        )
        print(
            f"EPSG:{zone}: classes at {cls.shape} px (1/{cls.factor}), embedding at {emb.shape} (1/{emb.factor})"
        )

# %% [markdown]
# ## The map

# %%
if LEAFLET:  # Leaflet from a local folder instead of the CDN
    local = Path(LEAFLET).resolve()
    folium.Map.default_js = [
        (n, (local / "leaflet.js").as_uri() if n == "leaflet" else u) for n, u in folium.Map.default_js
    ]
    folium.Map.default_css = [
        (n, (local / "leaflet.css").as_uri() if n == "leaflet_css" else u) for n, u in folium.Map.default_css
    ]

west, south, east, north = np.array([item["bbox"] for item in run.items.values()]).T
m = folium.Map(tiles=None, control_scale=True, max_zoom=22)
if BASEMAP:
    folium.TileLayer("OpenStreetMap", max_zoom=22, max_native_zoom=19).add_to(m)
for name, parts in layers.items():
    group = folium.FeatureGroup(name=name, show=name in ("embedding (PCA)", "classes"))
    for url, bounds in parts:
        folium.raster_layers.ImageOverlay(
            url, bounds=bounds, opacity=0.9 if name != "classes" else 1.0
        ).add_to(group)
    group.add_to(m)

tiles = folium.GeoJson(
    run.tile_footprints(),
    name="tiles",
    style_function=lambda _: {"color": "#333333", "weight": 1, "fill": False},
    tooltip=folium.GeoJsonTooltip(fields=["tile", "version", "crs"]),
)
tiles.add_to(m)

status = run.store.get_json("status.geojson")
if status is not None:  # a scheduled run's status layer (pimc run execute)
    colours = status.get("pimc:colors", {})
    folium.GeoJson(
        status,
        name="run status",
        show=False,
        style_function=lambda f: {
            "color": colours.get(f["properties"]["status"], "#888888"),
            "fillColor": colours.get(f["properties"]["status"], "#888888"),
            "weight": 1,
            "fillOpacity": 0.4,
        },
        tooltip=folium.GeoJsonTooltip(fields=["tile_id", "status", "version", "pixels"]),
    ).add_to(m)
    print("status layer:", status.get("pimc:counts"))

rows = "".join(
    f'<div><span style="display:inline-block;width:12px;height:12px;margin-right:4px;'
    f'background:rgb{c.color}"></span>{c.name}</div>'
    for c in legend.values()
)
legend_box = (
    '<div style="position:fixed;bottom:24px;left:12px;z-index:9999;background:white;padding:6px;'
    f'font:12px sans-serif;border:1px solid #999"><b>classes</b>{rows}</div>'
)
m.get_root().html.add_child(folium.Element(legend_box))
folium.LayerControl(collapsed=False).add_to(m)
m.fit_bounds([[float(south.min()), float(west.min())], [float(north.max()), float(east.max())]])
m.save(figures / "map.html")
print(f"saved {figures / 'map.html'} ({(figures / 'map.html').stat().st_size / 1e6:.1f} MB)")
m  # noqa: B018 - the last expression of a cell: Jupyter shows the map
