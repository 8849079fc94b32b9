"""The one head-fitting path: labelled windows -> embeddings -> class-balanced samples -> logistic regression."""

import datetime as dt

import numpy as np
import pytest
import shapely.geometry

from pimc_ray.data.labels import StacLabels
from pimc_ray.data.series import SeriesSpec
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid
from pimc_ray.errors import LabelError
from pimc_ray.local.archive import CLASSES, label_raster, tile_info
from pimc_ray.mapping.embedder import EmbedderFactory, series_reader
from pimc_ray.mapping.heads import fit_head
from pimc_ray.mapping.runner import Parallelism
from pimc_ray.models import EncoderConfig, EncoderRef
from tests.specs import TEST_SPEC

SERIES = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
SMALL = EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16}, seed=1)


def tile_grid(tile_id: str) -> OutputGrid:
    tile = tile_info(TEST_SPEC, tile_id)
    return OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))


def fit(archive, workers: int, **kwargs):
    items = archive.read_items("sentinel-2-l2a")
    return fit_head(
        StacLabels(tuple(archive.read_items("pimc-sample-labels"))),
        [tile_grid("33TTL")],
        reader=series_reader(SERIES, items, SMALL),
        embedder=EmbedderFactory(SERIES, EncoderRef(SMALL), batch_size=512),
        parallel=Parallelism(workers=workers),
        window_size=64,
        **kwargs,
    )


@pytest.mark.slow
def test_head_on_ray_actors_equals_the_head_of_this_process(local_ray, sample_archive):
    local_head, local_stats = fit(sample_archive, 0, per_class=10_000)
    ray_head, ray_stats = fit(sample_archive, 2, per_class=10_000)
    # every labelled pixel of the tile with valid series, counted independently from the truth raster
    truth = label_raster(TEST_SPEC, "33TTL")
    assert local_stats["pixels"] > 10_000
    assert set(local_stats["per_class"]) == {int(c) for c in np.unique(truth) if c} == set(range(1, 9))
    for cid, count in local_stats["per_class"].items():
        assert count <= int((truth == cid).sum())
    # samples are gathered in window order: two actors draw the very same pixels as this process, so the heads
    # differ only by the float rounding of one torch thread per actor against two here
    assert ray_stats["per_class"] == local_stats["per_class"] and ray_stats["pixels"] == local_stats["pixels"]
    assert ray_stats["train_accuracy"] == pytest.approx(local_stats["train_accuracy"], abs=0.002)
    assert ray_head.class_ids == local_head.class_ids == list(range(1, 9))
    assert ray_head.class_names[1] == CLASSES[1].name
    np.testing.assert_allclose(ray_head.mean.numpy(), local_head.mean.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ray_head.linear.weight.detach(), local_head.linear.weight.detach(), atol=5e-3)


def test_head_needs_labels_inside_the_area(sample_archive):
    items = sample_archive.read_items("sentinel-2-l2a")
    with pytest.raises(LabelError, match="no label falls inside"):
        fit_head(
            StacLabels(()),
            [tile_grid("33TTL")],
            reader=series_reader(SERIES, items, SMALL),
            embedder=EmbedderFactory(SERIES, EncoderRef(SMALL)),
            parallel=Parallelism(workers=0),
        )
