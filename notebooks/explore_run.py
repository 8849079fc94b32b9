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
# # Explore a pimc-ray run
#
# Opens a mapping run (`make demo`, `jobs/embed_aoi.py`, `pimc run execute`) from its `collection.json`, in a
# local folder or an S3 bucket, and shows:
#
# 1. the embeddings as a false-colour picture (their first three principal components);
# 2. the classes with their legend, the confidence of each pixel's class, and the QA layer (cloud-free
#    observations per pixel);
# 3. one pixel: its NDVI, EVI and SAVI series on the run's time grid, and their recurrence plots (what the RP
#    encoder sees);
# 4. the pixels nearest to it in embedding space, on the map.
#
# Every raster is read from the run's mosaics with at most `PIMC_MAX_PIXELS` pixels per band: an overview
# (a decimated read that GDAL serves from the COGs' overviews) or a window, never a whole mosaic.
#
# **Parameters** come from the environment (or edit the next cell; it is tagged `parameters` for papermill):
#
# | variable | what |
# |---|---|
# | `PIMC_RUN` | the run's `collection.json` (or its folder): `s3://pimc-demo/demo/collection.json`, `out/run1` |
# | `PIMC_FIGURES` | folder the figures are saved in (default `figures/` here) |
# | `PIMC_PIXEL` | `lon,lat` of the pixel of sections 3 and 4 (default: a confident pixel of the commonest class) |
# | `PIMC_MAX_PIXELS` | pixels per band of one read (default 1,000,000) |
#
# For a run in S3, `AWS_ENDPOINT_URL` and the credentials come from the environment too: after `make demo`,
# `pimc s3 serve --bucket pimc-demo --data-dir data/s3 --env-file .cache/s3.env &` then
# `set -a; source .cache/s3.env; set +a` before starting Jupyter.

# %% tags=["parameters"]
# ruff: noqa: E402
import os

RUN = os.environ.get("PIMC_RUN", "")
FIGURES = os.environ.get("PIMC_FIGURES", "figures")
PIXEL = os.environ.get("PIMC_PIXEL", "")
MAX_PIXELS = int(os.environ.get("PIMC_MAX_PIXELS", "1000000"))
NEIGHBOURS = 12
DPI = 100

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from pimc_ray.explore import (
    class_rgba,
    figures_folder,
    nearest_pixels,
    open_run,
    pca_rgb,
    read_raster,
    sample_points,
)

run = open_run(RUN)
figures = figures_folder(FIGURES)
manifest = run.store.get_json("manifest.json") or {}
legend = run.legend()
print(f"run {run.location}: {len(run.items)} tiles in EPSG {run.zones}, products {run.products}")
print(f"model: {manifest.get('model', '?')}; mosaics: {sorted(run.mosaics.values())}")
print("classes:", ", ".join(f"{c.value} {c.name}" for c in legend.values()))
zone = run.zones[0]  # the zone with the most tiles; pass another EPSG code to run.mosaic() to see the others

# %% [markdown]
# ## 1. Embeddings in false colour
#
# One float32 band per embedding dimension (NaN nodata). The first three principal components become red, green
# and blue: pixels whose temporal signatures the encoder finds alike share a colour. An embedding has tens to
# hundreds of bands, so it is read coarser than the class map (at most 16 M values: `DEFAULT_MAX_VALUES`).

# %%
with run.gdal_env():
    emb = read_raster(run.mosaic("embedding", zone), max_pixels=MAX_PIXELS, resampling="average")
rgba, components = pca_rgb(emb.data)
print(f"embedding: {emb.data.shape[0]} bands read at {emb.shape} px (1/{emb.factor} of full resolution)")

fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI, layout="constrained")
ax.imshow(rgba, extent=emb.extent)
ax.set_title(f"embedding, principal components 1-3 as RGB (EPSG:{zone}, m)")
fig.savefig(figures / "embedding_pca.png", dpi=DPI)
plt.show()

# %% [markdown]
# ## 2. Classes, confidence and QA
#
# `classes.tif` holds the class id (band 1, 0 = nodata) and the confidence of that class in percent (band 2);
# `qa.tif` the number of cloud-free observations of each pixel. All three are read on one grid.

# %%
with run.gdal_env():
    cls = read_raster(run.mosaic("classes", zone), max_pixels=MAX_PIXELS)
    qa = read_raster(run.mosaic("qa", zone), factor=cls.factor)
classes, confidence = cls.data[0], cls.data[1]
mapped = classes > 0

fig, axes = plt.subplots(1, 3, figsize=(15, 5), dpi=DPI, layout="constrained")
axes[0].imshow(class_rgba(classes, legend), extent=cls.extent)
present = [c for c in legend.values() if (classes == c.value).any()]
axes[0].legend(
    handles=[Patch(color=np.array(c.color) / 255, label=c.name) for c in present],
    loc="lower left",
    fontsize=8,
)
axes[0].set_title("classes")
shown = axes[1].imshow(np.where(mapped, confidence, np.nan), extent=cls.extent, vmin=0, vmax=100)
fig.colorbar(shown, ax=axes[1], shrink=0.7, label="%")
axes[1].set_title("confidence of the class")
valid = qa.data[0].astype(float)
shown = axes[2].imshow(np.where(valid > 0, valid, np.nan), extent=qa.extent, cmap="magma")
fig.colorbar(shown, ax=axes[2], shrink=0.7, label="observations")
axes[2].set_title("QA: cloud-free observations")
fig.savefig(figures / "classes_confidence_qa.png", dpi=DPI)
plt.show()

ids, counts = np.unique(classes[mapped], return_counts=True)
for cid, n in zip(ids, counts, strict=True):
    name = legend[cid].name if cid in legend else "?"
    mean = confidence[classes == cid].mean()
    print(f"{cid:3d} {name:18s} {100 * n / counts.sum():5.1f} %  mean confidence {mean:.0f} %")
print(
    f"cloud-free observations per mapped pixel: median {np.median(valid[mapped]):.0f}, min {valid[mapped].min():.0f}"
)

# %% [markdown]
# ## 3. One pixel: index series and recurrence plots
#
# The pixel is `PIMC_PIXEL` if set, else the most confident pixel of the commonest class. Its series is read
# again from the run's inputs through the pipeline's own read path: the STAC items the run froze in
# `items.ndjson` (those whose footprint holds the pixel), masked with SCL and put on the run's regular time grid
# (the parameters in `manifest.json`), then NDVI, EVI and SAVI. When the embedding stores the index series itself
# (the default embedding's `NDVI_<date>` ... bands), those values are drawn on top: the two agree. (A continental
# run's `items.ndjson` is large: this cell reads it through once, and keeps only the items over the pixel.)
#
# A recurrence plot is the matrix of distances `|x_i - x_j|` between the series' steps: dark where two dates
# look alike. Steps with no valid observation are blank rows and columns.

# %%
import json

import rasterio
import shapely.geometry
from rasterio.warp import transform
from rasterio.windows import Window as RasterWindow

from pimc_ray.data.series import SeriesReader, SeriesSpec, iso_dates
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.data.timegrid import TimeGridSpec
from pimc_ray.kernels.indices import INDEX_NAMES, vegetation_indices
from pimc_ray.kernels.recurrence import recurrence_plot

if PIXEL:
    lon, lat = (float(v) for v in PIXEL.split(","))
else:
    common = ids[np.argmax(counts)]
    row, col = np.unravel_index(
        np.argmax(np.where(classes == common, confidence.astype(int), -1)), classes.shape
    )
    lon, lat = cls.lonlat([row], [col])[0]
with run.gdal_env():
    query = sample_points(run.mosaic("embedding", zone), [(lon, lat)])[0]  # full resolution
    cid, conf = sample_points(run.mosaic("classes", zone), [(lon, lat)])[0]
print(
    f"pixel at lon {lon:.5f}, lat {lat:.5f}: class {cid} ({legend[cid].name if cid in legend else '?'}), {conf} %"
)

# the mosaics' full-resolution pixel under the point, as a one-pixel grid and window of the pipeline
with run.gdal_env(), rasterio.open(run.mosaic("classes", zone)) as src:
    xs, ys = transform("EPSG:4326", src.crs, [lon], [lat])
    row, col = src.index(xs[0], ys[0])
    bounds = tuple(float(v) for v in src.window_bounds(RasterWindow(col, row, 1, 1)))
    pixel = OutputGrid(zone, bounds, float(src.res[0]), shapely.geometry.box(*bounds))

items = []  # the run's frozen items over the pixel
for line in (run.store.get_bytes("items.ndjson") or b"").splitlines():
    item = json.loads(line) if line.strip() else None
    if item and shapely.geometry.shape(item["geometry"]).intersects(shapely.geometry.Point(lon, lat)):
        items.append(item)
params = manifest["params"]["spec"]
spec = SeriesSpec(
    dates=DateRange.parse(params["start"], params["end"]),
    timegrid=TimeGridSpec(steps=params["steps"], min_valid=params["min_valid"]),
    bands=tuple(params["bands"]),
    mask_classes=frozenset(params["mask_classes"]),
    catalog=params["catalog"],
)
series = SeriesReader(spec, items)(pixel, Window(0, 0, 1, 1, bounds))  # values (T, band, 1): reflectance
blue, red, nir = (series.values[:, spec.bands.index(b), 0] for b in ("B02", "B04", "B08"))
indices = vegetation_indices(blue, red, nir)  # (3, T)
plots = recurrence_plot(indices)  # (3, T, T)
dates = np.array(iso_dates(spec.grid_dates()), dtype="datetime64[D]")
print(
    f"{len(items)} items over the pixel, {int(series.valid_count[0])} cloud-free observations; "
    f"{np.isfinite(indices[0]).sum()} of {len(dates)} steps valid"
)
bands = run.band_names("embedding")
stored = {name: [i for i, b in enumerate(bands) if b.startswith(f"{name}_")] for name in INDEX_NAMES}

fig = plt.figure(figsize=(16, 4.5), dpi=DPI, layout="constrained")
grid_spec = fig.add_gridspec(1, 5)
ax = fig.add_subplot(grid_spec[0, :2])
for name, values, colour in zip(INDEX_NAMES, indices, ("tab:green", "tab:blue", "tab:olive"), strict=True):
    ax.plot(dates, values, "-", color=colour, label=f"{name} (read from items.ndjson)")
    if stored[name]:  # bands named <index>_<date>
        when = np.array([bands[i].split("_", 1)[1] for i in stored[name]], dtype="datetime64[D]")
        ax.plot(
            when, query[stored[name]], "o", color=colour, ms=4, mfc="none", label=f"{name} (in the embedding)"
        )
ax.set_ylim(-1.05, 1.05)
ax.legend(fontsize=7, loc="best")
ax.set_title(f"index series at {lon:.4f}, {lat:.4f}")
for i, (name, plot) in enumerate(zip(INDEX_NAMES, plots, strict=True)):
    ax = fig.add_subplot(grid_spec[0, 2 + i])
    ax.imshow(plot, cmap="viridis_r", vmin=0)
    ax.set_title(f"recurrence plot, {name}")
    ax.set_xlabel("step j")
    ax.set_ylabel("step i")
fig.savefig(figures / "pixel_series_rp.png", dpi=DPI)
plt.show()

# %% [markdown]
# ## 4. Nearest neighbours in embedding space
#
# The pixel's embedding (read at full resolution) against every pixel of the embedding picture of section 1:
# the `NEIGHBOURS` nearest by cosine distance, marked on the map. Pixels of the same land cover should be
# among them, wherever they are.

# %%
own = emb.rowcol(lon, lat)
rows, cols, distances = nearest_pixels(emb.data, query, k=NEIGHBOURS, exclude=own)
where = emb.lonlat(rows, cols)
with run.gdal_env():
    near_classes = sample_points(run.mosaic("classes", zone), where, bands=[1])[:, 0]
for (nlon, nlat), distance, nid in zip(where, distances, near_classes, strict=True):
    print(
        f"{nlon:.5f} {nlat:.5f}  distance {distance:.3g}  class {nid} {legend[nid].name if nid in legend else ''}"
    )

xs, ys = emb.transform * (cols + 0.5, rows + 0.5)
fig, axes = plt.subplots(1, 2, figsize=(15, 5), dpi=DPI, layout="constrained")
axes[0].imshow(rgba, extent=emb.extent)
axes[1].imshow(class_rgba(classes, legend), extent=cls.extent)
if own is not None:
    qx, qy = emb.transform * (own[1] + 0.5, own[0] + 0.5)
    for ax in axes:
        ax.plot(qx, qy, "*", ms=18, mfc="white", mec="black", label="the pixel")
for ax in axes:
    ax.plot(
        xs, ys, "o", ms=9, mfc="none", mec="magenta", mew=2, label=f"{len(rows)} nearest in embedding space"
    )
axes[0].legend(loc="lower left", fontsize=8)
axes[0].set_title("embedding (PCA)")
axes[1].set_title("classes")
fig.savefig(figures / "neighbours.png", dpi=DPI)
plt.show()
same = np.mean(near_classes == cid) if len(near_classes) else 0.0
print(f"{100 * same:.0f} % of the neighbours have the pixel's class ({cid})")
