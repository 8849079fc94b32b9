"""Per-window inference: series -> plots or patches -> encoder, on NumPy and (when lent a GPU) CuPy + CUDA."""

import datetime as dt

import numpy as np
import pytest
import shapely.geometry
import torch

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.series import SeriesReader, SeriesSpec, WindowSeries
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.kernels.recurrence import rp_from_reflectance
from pimc_ray.mapping.embedder import WindowEmbedder, series_reader
from pimc_ray.mapping.heads import classify
from pimc_ray.models import EncoderConfig

SPEC = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
SMALL = EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 12}, seed=2)


def random_series(n_pix=150, steps=36, seed=0):
    rng = np.random.default_rng(seed)
    series = rng.uniform(0.01, 0.5, (steps, 3, n_pix)).astype(np.float32)  # (T, blue/red/nir, P)
    series[:, :, 5] = np.nan  # a nodata pixel
    series[:, :, 7] = 0.0  # a black pixel: finite reflectance, NaN indices (0/0)
    return series


def test_embed_series_is_encoder_of_plots_with_nodata_kept():
    series = random_series()
    model = SMALL.build().eval()
    out = WindowEmbedder(SPEC, model, batch_size=64).embed_series(series)
    assert out.shape == (150, 12) and out.dtype == np.float32
    by_pixel = series.transpose(2, 1, 0)  # (P, 3, T)
    plots = rp_from_reflectance(by_pixel[:, 0], by_pixel[:, 1], by_pixel[:, 2])
    with torch.no_grad():
        expected = model(torch.from_numpy(plots)).numpy()
    good = np.setdiff1d(np.arange(150), [5, 7])
    np.testing.assert_allclose(out[good], expected[good], rtol=1e-5, atol=1e-6)
    assert np.isnan(out[[5, 7]]).all()


def test_classify_keeps_nodata():
    class Head:
        def predict(self, x):
            return np.where(x[:, 0] > 0, 3, 4), np.full(len(x), 0.9, np.float32)

    emb = np.stack([np.array([[1.0, -1.0], [np.nan, 2.0]]), np.zeros((2, 2))])  # (D=2, 2, 2)
    classes, conf = classify(emb.astype(np.float32), Head())
    np.testing.assert_array_equal(classes, [[3, 4], [0, 3]])
    assert np.isnan(conf[1, 0]) and conf[0, 0] == pytest.approx(0.9)


@pytest.mark.gpu
def test_cuda_path_matches_cpu():
    series = random_series(n_pix=3000, seed=1)
    cpu = WindowEmbedder(SPEC, SMALL.build(), batch_size=64).embed_series(series)
    gpu = WindowEmbedder(SPEC, SMALL.build(), batch_size=64, device="cuda").embed_series(series)
    np.testing.assert_array_equal(np.isnan(cpu), np.isnan(gpu))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)  # cuDNN convolutions (TF32 off by default)


# --- image-patch encoders: windows read grown by the halo ---------------------------------------------------

PATCHY = EncoderConfig(
    name="rsi-cnn", params={"in_channels": 10, "patch_size": 5, "widths": [8, 16], "embed_dim": 12}, seed=4
)


def patch_grid(size: int, footprint=None) -> OutputGrid:
    bounds = (0.0, 0.0, 10.0 * size, 10.0 * size)
    return OutputGrid(32632, bounds, 10.0, footprint or shapely.geometry.box(*bounds))


def window_of(grid: OutputGrid, row: int, col: int, h: int, w: int) -> Window:
    xmin, _, _, ymax = grid.bounds
    return Window(
        row, col, h, w, (xmin + 10 * col, ymax - 10 * (row + h), xmin + 10 * (col + w), ymax - 10 * row)
    )


def read_grown(values: np.ndarray, window: Window, m: int) -> WindowSeries:
    """What the read stage returns for ``window`` grown by ``m``: ``values`` (T, 10, H, W) is the grid grown by
    ``m``, so the grown window starts at the window's own row and column there."""
    r, c = window.row, window.col
    part = values[:, :, r : r + window.height + 2 * m, c : c + window.width + 2 * m]
    flat = np.ascontiguousarray(part).reshape(part.shape[0], part.shape[1], -1)
    count = np.isfinite(flat).all(axis=(0, 1)).astype(np.uint16) * 7
    never = np.full(flat.shape[-1], np.datetime64("NaT"), dtype="datetime64[D]")
    return WindowSeries(flat, count, never, never)


def random_bands(height: int, width: int, steps: int = 12, seed: int = 0) -> np.ndarray:
    """(T, 10, height, width) reflectance with spatial structure (smooth fields plus noise)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = 0.2 + 0.1 * np.sin(rows / 3.0)[None, None] * np.cos(cols / 4.0)[None, None]
    return (base + rng.uniform(0.0, 0.1, (steps, 10, height, width))).astype(np.float32)


def test_patch_encoder_declares_its_halo_and_reads_all_bands_grown():
    assert PATCHY.inputs == "patches" and PATCHY.halo == 2  # a 5 x 5 patch reaches 2 px each side
    assert SMALL.inputs == "plots" and SMALL.halo == 0
    reader = series_reader(SPEC, [], PATCHY)
    assert reader.halo == 2 and reader.spec.bands == BANDS and reader.spec.dates == SPEC.dates
    assert series_reader(SPEC, [], SMALL.build()) == SeriesReader(SPEC, [])


def test_patch_encoder_edges_see_the_same_context_as_interiors():
    """Four 16-pixel windows (tiles) embed their edge pixels exactly as one 32-pixel window around them does."""
    m = 2
    grid = patch_grid(32)
    values = random_bands(32 + 2 * m, 32 + 2 * m)  # the whole grid grown by the halo
    model = PATCHY.build().eval()
    embedder = WindowEmbedder(SPEC, model, batch_size=100)
    big = window_of(grid, 0, 0, 32, 32)
    whole = embedder.compute(grid, big, read_grown(values, big, m))
    assert whole.embedding.shape == (12, 32, 32) and np.isfinite(whole.embedding).all()
    assert whole.valid_count.shape == (32, 32) and (whole.valid_count == 7).all()
    for r, c in [(0, 0), (0, 16), (16, 0), (16, 16)]:
        tile = window_of(grid, r, c, 16, 16)
        part = embedder.compute(grid, tile, read_grown(values, tile, m)).embedding
        np.testing.assert_allclose(part, whole.embedding[:, r : r + 16, c : c + 16], rtol=1e-5, atol=1e-6)

    # independently: pixel (15, 16), at the edge of two tiles, is the encoder of its 5 x 5 patch of the median
    median = np.median(values, axis=0)
    with torch.no_grad():
        expected = model(torch.from_numpy(median[None, :, 15 : 15 + 5, 16 : 16 + 5].copy())).numpy()[0]
    np.testing.assert_allclose(whole.embedding[:, 15, 16], expected, rtol=1e-5, atol=1e-6)

    # without the halo a tile has only its own pixels: padded with its edge values (as a reader that stopped at
    # the tile and padded would do), interiors agree, but edges, whose patches reach the next tile, do not
    own = values[:, :, m : m + 16, m : m + 16]
    padded = np.pad(own, ((0, 0), (0, 0), (m, m), (m, m)), mode="edge")
    tile = window_of(grid, 0, 0, 16, 16)
    naive = embedder.compute(grid, tile, read_grown(padded, tile, m)).embedding
    inner = slice(m, 16 - m)
    np.testing.assert_allclose(naive[:, inner, inner], whole.embedding[:, inner, inner], rtol=1e-5, atol=1e-6)
    edge = whole.embedding[:, :16, 15]  # the tile's east column
    assert not np.allclose(naive[:, :, 15], edge, rtol=1e-3, atol=1e-4)


def test_patch_encoder_nodata_rule():
    """Outside the AOI, and wherever a pixel's patch reaches nodata, the embedding is NaN; the QA is the window's."""
    m = 2
    footprint = shapely.geometry.box(0.0, 0.0, 80.0, 160.0)  # the west 8 columns of a 16 x 16 grid
    grid = patch_grid(16, footprint)
    values = random_bands(16 + 2 * m, 16 + 2 * m, seed=1)
    values[:, :, 4 + m, 3 + m] = np.nan  # window pixel (4, 3) has no data
    window = window_of(grid, 0, 0, 16, 16)
    series = read_grown(values, window, m)
    result = WindowEmbedder(SPEC, PATCHY.build(), batch_size=16).compute(grid, window, series)
    nodata = np.isnan(result.embedding).all(axis=0)
    assert (np.isnan(result.embedding).any(axis=0) == nodata).all()  # whole pixels, never single dimensions
    expected = np.zeros((16, 16), bool)
    expected[:, 8:] = True  # outside the AOI
    expected[4 - m : 4 + m + 1, 3 - m : 3 + m + 1] = True  # every patch that holds pixel (4, 3)
    np.testing.assert_array_equal(nodata, expected)
    grown_count = series.valid_count.reshape(16 + 2 * m, 16 + 2 * m)
    np.testing.assert_array_equal(result.valid_count, grown_count[m : m + 16, m : m + 16])
    with pytest.raises(ValueError, match="grown by 2 px"):
        WindowEmbedder(SPEC, PATCHY.build()).compute(grid, window, read_grown(values, window, 0))


@pytest.mark.gpu
def test_cuda_patch_path_matches_cpu():
    values = random_bands(40 + 4, 40 + 4, seed=2)
    values[:, :, 10, 10] = np.nan
    flat = values.reshape(12, 10, -1)
    cpu = WindowEmbedder(SPEC, PATCHY.build(), batch_size=256).embed_patches(flat, 40, 40)
    gpu = WindowEmbedder(SPEC, PATCHY.build(), batch_size=256, device="cuda").embed_patches(flat, 40, 40)
    np.testing.assert_array_equal(np.isnan(cpu), np.isnan(gpu))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)


# --- the joint encoder: both towers side by side --------------------------------------------------------------

JOINT = EncoderConfig(name="pimc-joint", params={"rp": SMALL.to_dict(), "rsi": PATCHY.to_dict()})


def test_joint_encoder_is_the_plot_embedding_then_the_patch_embedding():
    m = 2
    assert JOINT.inputs == "plots+patches" and JOINT.halo == m
    reader = series_reader(SPEC, [], JOINT)
    assert reader.halo == m and reader.spec.bands == BANDS
    footprint = shapely.geometry.box(0.0, 0.0, 80.0, 160.0)  # the west 8 columns of a 16 x 16 grid
    grid = patch_grid(16, footprint)
    values = random_bands(16 + 2 * m, 16 + 2 * m, steps=36, seed=3)
    values[:, :, 4 + m, 3 + m] = np.nan  # window pixel (4, 3) has no data
    window = window_of(grid, 0, 0, 16, 16)
    model = JOINT.build().eval()
    result = WindowEmbedder(SPEC, model, batch_size=50).compute(grid, window, read_grown(values, window, m))
    assert result.embedding.shape == (24, 16, 16)

    # by hand, pixel (10, 5): its own blue/red/NIR plots, then its 5 x 5 patch of the median
    blue, red, nir = (values[:, BANDS.index(b), 10 + m, 5 + m][None] for b in ("B02", "B04", "B08"))
    median = np.median(values, axis=0)
    with torch.no_grad():
        plots = torch.from_numpy(rp_from_reflectance(blue, red, nir))
        patch = torch.from_numpy(median[None, :, 10 : 10 + 5, 5 : 5 + 5].copy())
        expected = torch.cat([model.rp(plots), model.rsi(patch)], dim=1).numpy()[0]
    np.testing.assert_allclose(result.embedding[:, 10, 5], expected, rtol=1e-5, atol=1e-6)

    # nodata: whole pixels, outside the AOI and wherever either part has none (the plot part only at (4, 3))
    nodata = np.isnan(result.embedding).all(axis=0)
    assert (np.isnan(result.embedding).any(axis=0) == nodata).all()
    expected_nodata = np.zeros((16, 16), bool)
    expected_nodata[:, 8:] = True
    expected_nodata[4 - m : 4 + m + 1, 3 - m : 3 + m + 1] = True
    np.testing.assert_array_equal(nodata, expected_nodata)
    with pytest.raises(ValueError, match="patches, not series"):
        WindowEmbedder(SPEC, PATCHY.build()).embed_series(random_series())


@pytest.mark.gpu
def test_cuda_joint_path_matches_cpu():
    m = 2
    grid = patch_grid(24)
    window = window_of(grid, 0, 0, 24, 24)
    values = random_bands(24 + 2 * m, 24 + 2 * m, steps=36, seed=5)
    values[:, :, 9, 9] = np.nan
    series = read_grown(values, window, m)
    cpu = WindowEmbedder(SPEC, JOINT.build(), batch_size=128).compute(grid, window, series).embedding
    gpu = WindowEmbedder(SPEC, JOINT.build(), batch_size=128, device="cuda").compute(grid, window, series)
    np.testing.assert_array_equal(np.isnan(cpu), np.isnan(gpu.embedding))
    np.testing.assert_allclose(gpu.embedding, cpu, rtol=1e-3, atol=1e-4)


# --- the series beside the plot: index series + RP encoder ----------------------------------------------------

SERIES_RP = EncoderConfig(
    name="pimc-concat",
    params={"parts": [{"name": "index-series", "params": {"steps": 36}}, SMALL.to_dict()]},
)


def test_series_and_plots_side_by_side_are_the_indices_then_the_plot_embedding():
    assert SERIES_RP.inputs == "series+plots" and SERIES_RP.halo == 0
    assert series_reader(SPEC, [], SERIES_RP) == SeriesReader(SPEC, [])  # blue, red, NIR; no halo
    footprint = shapely.geometry.box(0.0, 0.0, 80.0, 160.0)  # the west 8 columns of a 16 x 16 grid
    grid = patch_grid(16, footprint)
    window = window_of(grid, 0, 0, 16, 16)
    series = random_series(n_pix=256, seed=4)  # (T, 3, P) blue, red, NIR: pixel 5 nodata, pixel 7 black
    none = np.array([], "datetime64[D]")
    ws = WindowSeries(series, np.full(256, 9, np.uint16), none, none)
    model = SERIES_RP.build().eval()
    result = WindowEmbedder(SPEC, model, batch_size=100).compute(grid, window, ws)
    assert result.embedding.shape == (108 + 12, 16, 16)

    # by hand, pixel 3 (row 0, col 3, inside the AOI): NDVI, EVI, SAVI at every step, then its plots' encoding
    blue, red, nir = (series[:, c, 3] for c in range(3))
    ndvi = (nir - red) / (nir + red)
    evi = 2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)
    savi = 1.5 * (nir - red) / (nir + red + 0.5)
    by_hand = np.clip(np.concatenate([ndvi, evi, savi]), -1, 1)  # indices are clipped to [-1, 1] (policy)
    np.testing.assert_allclose(result.embedding[:108, 0, 3], by_hand, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        plots = torch.from_numpy(rp_from_reflectance(blue[None], red[None], nir[None]))
        expected = model.towers[1](plots).numpy()[0]
    np.testing.assert_allclose(result.embedding[108:, 0, 3], expected, rtol=1e-5, atol=1e-6)

    # nodata: whole pixels, outside the AOI, where the series has none (5) and where an index is undefined (7)
    nodata = np.isnan(result.embedding).all(axis=0).reshape(-1)
    assert (np.isnan(result.embedding).any(axis=0).reshape(-1) == nodata).all()
    expected_nodata = ~grid.inside(window).reshape(-1)
    expected_nodata[[5, 7]] = True
    np.testing.assert_array_equal(nodata, expected_nodata)


def test_bfloat16_runs_the_encoders_under_autocast_and_keeps_the_series_exact():
    """precision="bfloat16": the series part is the float32 indices unchanged, the plot part the encoder under
    torch's bf16 autocast (computed here by hand the same way), close to float32 but not equal to it."""
    footprint = shapely.geometry.box(0.0, 0.0, 160.0, 160.0)
    grid = patch_grid(16, footprint)
    window = window_of(grid, 0, 0, 16, 16)
    series = random_series(n_pix=256, seed=6)
    none = np.array([], "datetime64[D]")
    ws = WindowSeries(series, np.full(256, 9, np.uint16), none, none)
    model = SERIES_RP.build().eval()
    full = WindowEmbedder(SPEC, model, batch_size=100).compute(grid, window, ws).embedding
    half = (
        WindowEmbedder(SPEC, model, batch_size=100, precision="bfloat16").compute(grid, window, ws).embedding
    )
    np.testing.assert_array_equal(np.isnan(half), np.isnan(full))
    np.testing.assert_array_equal(half[:108], full[:108])  # the index series: float32, exact
    ok = np.isfinite(full[108:]).all(axis=0)
    assert not np.array_equal(half[108:][:, ok], full[108:][:, ok])
    np.testing.assert_allclose(half[108:][:, ok], full[108:][:, ok], rtol=0.05, atol=0.05)
    blue, red, nir = (series[:, c, 3] for c in range(3))
    plots = torch.from_numpy(rp_from_reflectance(blue[None], red[None], nir[None]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.towers[1](plots).float().numpy()[0]
    np.testing.assert_allclose(half[108:, 0, 3], expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="precision must be one of"):
        WindowEmbedder(SPEC, model, precision="float16")
