# %% [markdown]
# # Explore pimc-ray maps
#
# Opens the outputs of `make demo` or of any `jobs/embed_aoi.py` run, from a local folder or an S3 bucket: the run
# manifest, the per-tile STAC items, and the mosaics of the embeddings, the classes (with confidence) and the
# cloud-free observation counts: per product and UTM zone, the GDAL raster tile index (`mosaic_*.gti.gpkg`,
# GDAL >= 3.9, written for every zone), or else the VRT (`mosaic_*.vrt`, written for small zones). This file is
# a notebook in the "percent" format: open it in Jupyter (with jupytext) or VS Code, or run it as a script:
#
#     .venv/bin/python notebooks/explore_maps.py out/demo
#     .venv/bin/python notebooks/explore_maps.py s3://pimc-demo/demo    # with AWS_ENDPOINT_URL etc. set
#
# It prints summaries and, when matplotlib is installed, saves `overview.png` in the current folder.

# %%
import json
import sys

import numpy as np
import rasterio

from pimc_ray.storage import gdal_s3_env, open_store

LOCATION = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "out/demo"
store = open_store(LOCATION)
manifest = store.get_json("manifest.json")
tiles = sorted(t for t, e in manifest["tiles"].items() if e["status"] == "done")
print(f"run {manifest['key']}: {len(tiles)} tiles done, model {manifest['model']}")
item = store.get_json(f"tiles/{tiles[0]}/item.json")
props = item["properties"]
print(f"tile {tiles[0]}: {props['proj:code']}, {props['proj:shape']} px, assets {list(item['assets'])}")
zone = item["properties"]["proj:code"].split(":")[1]
gdal_env = rasterio.Env(**gdal_s3_env())
gdal_env.__enter__()  # /vsis3/ settings for the rest of the notebook


def mosaic(product: str) -> str:
    """GDAL's path to the zone's mosaic of ``product``: the GTI index if the run wrote one, else the VRT."""
    stem = f"mosaic_{product}_epsg{zone}"
    key = f"{stem}.gti.gpkg" if store.exists(f"{stem}.gti.gpkg") else f"{stem}.vrt"
    return store.gdal_path(key)


print("mosaics:", ", ".join(mosaic(p).rsplit("/", 1)[1] for p in ("embedding", "classes", "qa")))

# %% [markdown]
# ## Embeddings: float32 bands, NaN nodata. A PCA to three components gives a false-colour view in which pixels
# with similar temporal signatures share a colour. The default embedding has a few hundred bands, so the view is
# read at half resolution, from the COGs' first overview level.

# %%
with rasterio.open(mosaic("embedding")) as src:
    emb = src.read(out_shape=(src.count, src.height // 2, src.width // 2))  # (D, H / 2, W / 2)
    print(src.crs, src.res, src.shape, src.count, "bands:", src.descriptions[:3], "...")
d, h, w = emb.shape
flat = emb.reshape(d, -1).T
ok = np.isfinite(flat).all(axis=1)
centred = flat[ok] - flat[ok].mean(0)
_, _, components = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
pcs = centred @ components[:3].T
lo, hi = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
rgb = np.zeros((h * w, 3), np.float32)
rgb[ok] = np.clip((pcs - lo) / (hi - lo), 0, 1)
rgb = rgb.reshape(h, w, 3)

# %% [markdown]
# ## Classes and confidence

# %%
with rasterio.open(mosaic("classes")) as src:
    classes, confidence = src.read(1), src.read(2)
    cmap = src.colormap(1)
    first_tile = store.gdal_path(f"tiles/{tiles[0]}/" + item["assets"]["classes"]["href"].removeprefix("./"))
with rasterio.open(first_tile) as src:
    names = json.loads(src.tags().get("pimc_classes", "{}"))
with rasterio.open(mosaic("qa")) as src:
    valid = src.read(1)
ids, counts = np.unique(classes[classes > 0], return_counts=True)
for cid, n in zip(ids, counts, strict=True):
    mean_conf = confidence[classes == cid].mean()
    print(
        f"{cid:2d} {names.get(str(cid), '?'):18s} {100 * n / counts.sum():5.1f} %  mean confidence {mean_conf:.0f} %"
    )
print(
    f"cloud-free observations per pixel: median {np.median(valid[valid > 0]):.0f}, min {valid[valid > 0].min()}"
)

# %%
try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: skipping the figure (pip install matplotlib)")
else:
    lut = np.zeros((256, 3), np.float32)
    for value, rgba in cmap.items():
        lut[value] = np.array(rgba[:3]) / 255
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    axes[0].imshow(rgb)
    axes[0].set_title("embedding PCA (RGB = PC1-3)")
    axes[1].imshow(lut[classes])
    axes[1].set_title("classes")
    axes[2].imshow(np.where(classes > 0, confidence, np.nan), vmin=0, vmax=100)
    axes[2].set_title("confidence (%)")
    for ax in axes:
        ax.set_axis_off()
    fig.savefig("overview.png", dpi=100, bbox_inches="tight")
    print("saved overview.png")
