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
# # A classification head from a handful of labelled points
#
# The embeddings of a run are features: a linear head fit on a few labelled pixels classifies every other pixel.
# This notebook fits one (the same logistic regression as `jobs/train_head.py`,
# `pimc_ray.models.heads.LinearClassifier`) on the embeddings under your points, classifies the run's embedding
# picture with it, and compares the result with the run's own class map.
#
# **The points** come from a GeoJSON file (`PIMC_LABELS`, local or `s3://`): points or polygons in lon/lat with
# a `class` property holding a class name of the run's legend (`grassland`) or an id, the format
# `jobs/train_head.py --labels` takes. To draw them: run the notebook without `PIMC_LABELS`, draw points on the
# map of the next section, press *Export*, give each feature a `class` property, and set `PIMC_LABELS` to the
# file. Without `PIMC_LABELS` the notebook labels `PER_CLASS` points per class itself, picked among the run's
# most confident pixels of that class, so that it runs through: a head trained on the run's own classes.
#
# | variable | what |
# |---|---|
# | `PIMC_RUN` | the run's `collection.json` (or its folder), local or `s3://` |
# | `PIMC_LABELS` | the labelled points or polygons (GeoJSON); unset: points picked from the run's classes |
# | `PIMC_FIGURES` | folder the figures are saved in (default `figures/` here) |
# | `PIMC_HEAD_OUT` | a folder or URI to save the head in (for `jobs/classify_aoi.py --head`); unset: not saved |
# | `PIMC_MAX_PIXELS` | pixels per band of one read (default 1,000,000) |

# %% tags=["parameters"]
# ruff: noqa: E402
import os

RUN = os.environ.get("PIMC_RUN", "")
LABELS = os.environ.get("PIMC_LABELS", "")
FIGURES = os.environ.get("PIMC_FIGURES", "figures")
HEAD_OUT = os.environ.get("PIMC_HEAD_OUT", "")
MAX_PIXELS = int(os.environ.get("PIMC_MAX_PIXELS", "1000000"))
CLASS_PROPERTY = "class"
PER_CLASS = 5  # points per class picked from the run's classes when there is no PIMC_LABELS
PER_POLYGON = 50  # pixels drawn from each labelled polygon
SEED = 0
DPI = 100

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from pimc_ray.data.labels import GeoJSONLabels
from pimc_ray.explore import (
    ClassInfo,
    Raster,
    class_rgba,
    figures_folder,
    open_run,
    read_raster,
    sample_points,
)
from pimc_ray.models.heads import LinearClassifier

run = open_run(RUN)
figures = figures_folder(FIGURES)
legend = run.legend()
zone = run.zones[0]
with run.gdal_env():
    cls = read_raster(run.mosaic("classes", zone), max_pixels=MAX_PIXELS)
print(f"run {run.location}: classes {', '.join(c.name for c in legend.values())}")

# %% [markdown]
# ## The labelled points
#
# Without `PIMC_LABELS`: a map to draw points on (it needs the internet for Leaflet's script, see `map_run`), and
# `PER_CLASS` points per class picked from the run's most confident pixels, written to
# `PIMC_FIGURES/labels_from_run.geojson` in the format the notebook reads.

# %%
if not LABELS:
    import folium
    from folium.plugins import Draw
    from IPython.display import display

    from pimc_ray.explore import png_data_uri, to_web_mercator

    warped = to_web_mercator(
        Raster(np.moveaxis(class_rgba(cls.data[0], legend), -1, 0), cls.transform, cls.crs, 0)
    )
    west, south, east, north = warped.lonlat_bounds()
    draw = folium.Map(tiles=None, control_scale=True, max_zoom=22)
    folium.raster_layers.ImageOverlay(
        png_data_uri(np.moveaxis(warped.data, 0, -1)), bounds=[[south, west], [north, east]], name="classes"
    ).add_to(draw)
    Draw(export=True, filename="labels.geojson", draw_options={"polyline": False, "circle": False}).add_to(
        draw
    )
    draw.fit_bounds([[south, west], [north, east]])
    draw.save(figures / "draw_labels.html")

    rng = np.random.default_rng(SEED)
    classes, confidence = cls.data[0], cls.data[1]
    features = []
    for info in legend.values():
        rows, cols = np.nonzero(classes == info.value)
        if len(rows) == 0:
            continue
        best = np.argsort(-confidence[rows, cols], kind="stable")[: 10 * PER_CLASS]  # the most confident
        pick = rng.choice(best, min(PER_CLASS, len(best)), replace=False)
        for lon, lat in cls.lonlat(rows[pick], cols[pick]):
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [float(lon), float(lat)]},
                    "properties": {CLASS_PROPERTY: info.name},
                }
            )
    LABELS = str(figures / "labels_from_run.geojson")
    with open(LABELS, "w") as file:
        json.dump({"type": "FeatureCollection", "features": features}, file)
    print(f"no PIMC_LABELS: {len(features)} points picked from the run's classes, in {LABELS}")
    display(draw)

# %% [markdown]
# ## Their embeddings
#
# A point labels the pixel under it, a polygon up to `PER_POLYGON` of the pixels whose centre it holds (the rule of
# `jobs/train_head.py`). Class names are matched to the run's legend, so the head's ids are the run's; names
# the legend lacks get new ids. Each labelled pixel's embedding is read at full resolution, a block at a time.

# %%
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import geometry_mask, geometry_window

labels = GeoJSONLabels.load(LABELS, class_property=CLASS_PROPERTY)
by_name = {c.name.lower(): c.value for c in legend.values()}
new_ids = iter(range(max(legend, default=0) + 1, 256))
to_run = {
    file_id: by_name.get(name.lower()) or next(new_ids) for file_id, name in sorted(labels.names.items())
}  # names in the file -> the run's ids (integer ids in the file are the run's already)
names = {c.value: c.name for c in legend.values()} | {v: labels.names[k] for k, v in to_run.items()}

rng = np.random.default_rng(SEED)
points, targets = [], []
with run.gdal_env(), rasterio.open(run.mosaic("embedding", zone)) as src:
    to_zone = Transformer.from_crs(4326, src.crs, always_xy=True)
    to_lonlat = Transformer.from_crs(src.crs, 4326, always_xy=True)
    for geometry, file_id in zip(labels.geometries, labels.ids, strict=True):
        target = to_run.get(file_id, file_id)
        if geometry.geom_type == "Point":
            points.append((geometry.x, geometry.y))
            targets.append(target)
            continue
        shape = shapely.transform(geometry, to_zone.transform, interleaved=False)
        window = geometry_window(src, [shape])
        inside = geometry_mask(
            [shape], (int(window.height), int(window.width)), src.window_transform(window), invert=True
        )
        rows, cols = np.nonzero(inside)
        keep = rng.permutation(len(rows))[:PER_POLYGON]
        xs, ys = src.window_transform(window) * (cols[keep] + 0.5, rows[keep] + 0.5)
        lons, lats = to_lonlat.transform(xs, ys)
        points += list(zip(lons, lats, strict=True))
        targets += [target] * len(keep)
    x = sample_points(run.mosaic("embedding", zone), points)  # (N, dim)
y = np.asarray(targets)
usable = np.isfinite(x).all(axis=1)
print(f"{len(labels.ids)} features -> {len(y)} labelled pixels, {usable.sum()} with an embedding")
x, y = x[usable], y[usable]
for value, n in zip(*np.unique(y, return_counts=True), strict=True):
    print(f"  {value:3d} {names.get(value, '?'):18s} {n} pixels")

# %% [markdown]
# ## The head, and the run's classes beside its
#
# The head classifies the embedding read within the pixel budget (nearest-neighbour decimation, so that each
# pixel's embedding and the run's class are the same pixel's); the run's classes are read on the same grid.

# %%
ids = sorted(int(v) for v in np.unique(y))
if len(ids) < 2:
    raise ValueError(f"the labels hold {len(ids)} class(es) with an embedding; a head needs two or more")
colours = {c.value: "{:02x}{:02x}{:02x}".format(*c.color) for c in legend.values()}
head = LinearClassifier(x.shape[1], ids, {i: names.get(i, str(i)) for i in ids}, colours).fit(x, y)
fitted, _ = head.predict(x)
print(f"head: {len(ids)} classes, {len(y)} pixels, training accuracy {100 * np.mean(fitted == y):.0f} %")
if HEAD_OUT:
    print("saved the head in", head.save(HEAD_OUT))

with run.gdal_env():
    emb = read_raster(run.mosaic("embedding", zone), max_pixels=MAX_PIXELS)
    ours = read_raster(run.mosaic("classes", zone), factor=emb.factor, bands=[1]).data[0]
flat = emb.data.reshape(emb.data.shape[0], -1).T  # (pixel, dim)
ok = np.isfinite(flat).all(axis=1)
predicted = np.zeros(flat.shape[0], np.uint8)
predicted[ok] = head.predict(flat[ok])[0]
predicted = predicted.reshape(emb.shape)

both = (predicted > 0) & (ours > 0)
agree = both & (predicted == ours)
print(
    f"the head agrees with the run's classes on {100 * agree.sum() / max(both.sum(), 1):.1f} % of {both.sum()} pixels"
)
shown = sorted(set(np.unique(ours[both])) | set(np.unique(predicted[both])))
confusion = np.array([[np.sum((ours == a) & (predicted == b)) for b in shown] for a in shown])
print("rows: the run's class, columns: the head's")
print(" " * 18 + "".join(f"{names.get(b, b)[:8]:>9s}" for b in shown))
for a, row in zip(shown, confusion, strict=True):
    print(f"{names.get(a, str(a))[:17]:18s}" + "".join(f"{v:9d}" for v in row))

# %%
everyone = legend | {i: ClassInfo(i, names[i], (128, 128, 128)) for i in ids if i not in legend}
lonlat = np.asarray(points)[usable]
to_zone = Transformer.from_crs(4326, emb.crs, always_xy=True)
px, py = to_zone.transform(lonlat[:, 0], lonlat[:, 1])

fig, axes = plt.subplots(1, 4, figsize=(20, 5), dpi=DPI, layout="constrained")
axes[0].imshow(class_rgba(ours, everyone), extent=emb.extent)
axes[0].scatter(px, py, c=[np.array(everyone[v].color) / 255 for v in y], edgecolors="black", s=40)
axes[0].set_title("the run's classes, and the labelled points")
axes[1].imshow(class_rgba(predicted, everyone), extent=emb.extent)
axes[1].set_title(f"the head's classes ({len(y)} labelled pixels)")
agreement = np.zeros((*emb.shape, 4))
agreement[both & agree] = (0.1, 0.6, 0.25, 1)
agreement[both & ~agree] = (0.85, 0.1, 0.1, 1)
axes[2].imshow(agreement, extent=emb.extent)
axes[2].set_title(f"agreement: {100 * agree.sum() / max(both.sum(), 1):.0f} % (green agree, red differ)")
axes[3].imshow(confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
axes[3].set_xticks(range(len(shown)), [names.get(v, str(v)) for v in shown], rotation=60, fontsize=7)
axes[3].set_yticks(range(len(shown)), [names.get(v, str(v)) for v in shown], fontsize=7)
axes[3].set_xlabel("the head's class")
axes[3].set_ylabel("the run's class")
axes[3].set_title("confusion (share of each row)")
fig.legend(
    handles=[Patch(color=np.array(everyone[v].color) / 255, label=everyone[v].name) for v in shown],
    loc="outside lower center",
    ncols=min(len(shown), 8),
    fontsize=8,
)
fig.savefig(figures / "head_vs_run.png", dpi=DPI)
plt.show()
