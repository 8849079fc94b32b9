# %% [markdown]
# # Explore pimc-ray maps
#
# Opens the outputs of `make demo` (or any `jobs/embed_aoi.py` run): the embedding COG, the class map and its
# confidence, and the per-pixel count of cloud-free observations. This file is a notebook in the "percent"
# format: open it in Jupyter (with jupytext) or VS Code, or run it as a script:
#
#     .venv/bin/python notebooks/explore_maps.py out/demo
#
# It prints summaries and, when matplotlib is installed, saves `overview.png` beside the maps.

# %%
import json
import sys
from pathlib import Path

import numpy as np
import rasterio

OUT = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "out/demo")
run = json.loads((OUT / "run.json").read_text())
zone = next(OUT.glob("embedding_*.tif")).stem.split("_", 1)[1]
print(f"run {run['key']}: {run['pixels']} pixels in {run['seconds']} s, weights: {run['weights']}")

# %% [markdown]
# ## Embeddings: 64 float32 bands, NaN nodata. A PCA to three components gives a false-colour view in which
# pixels with similar temporal signatures share a colour.

# %%
with rasterio.open(OUT / f"embedding_{zone}.tif") as src:
    emb = src.read()  # (D, H, W)
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
with rasterio.open(OUT / f"classes_{zone}.tif") as src:
    classes = src.read(1)
    names = json.loads(src.tags()["pimc_classes"])
    cmap = src.colormap(1)
with rasterio.open(OUT / f"confidence_{zone}.tif") as src:
    confidence = src.read(1)
with rasterio.open(OUT / f"valid_count_{zone}.tif") as src:
    valid = src.read(1)
ids, counts = np.unique(classes[classes > 0], return_counts=True)
for cid, n in zip(ids, counts, strict=True):
    mean_conf = np.nanmean(confidence[classes == cid])
    print(
        f"{cid:2d} {names.get(str(cid), '?'):18s} {100 * n / counts.sum():5.1f} %  mean confidence {mean_conf:.2f}"
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
    axes[2].imshow(confidence, vmin=0, vmax=1)
    axes[2].set_title("confidence")
    for ax in axes:
        ax.set_axis_off()
    fig.savefig(OUT / "overview.png", dpi=100, bbox_inches="tight")
    print("saved", OUT / "overview.png")
