"""EuroSAT read from its class folders: the images, the encoder's ten bands in pimc-ray's order, the raw
statistics, and the splits."""

from __future__ import annotations

import numpy as np
import pytest

from pimc_ray.errors import DatasetError
from pimc_ray.evaluation import eurosat as es
from tests.evaluation.fixtures import EUROSAT_CLASSES

#: B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 at their places in a EuroSAT file (B01 ... B12, B8A), written out.
ENCODER_BANDS_IN_FILE = [1, 2, 3, 4, 5, 6, 7, 12, 10, 11]


def test_the_catalog_lists_every_class_folder_in_class_order(eurosat):
    root, written = eurosat
    catalog = es.list_eurosat(root)
    assert len(catalog) == len(written) == 60
    assert sorted(catalog.names) == sorted(written)
    for name, label in zip(catalog.names, catalog.labels, strict=True):
        assert EUROSAT_CLASSES[label] == name.rsplit("_", 1)[0]
    assert catalog.names[:6] == [f"AnnualCrop_{n}" for n in range(1, 7)]


def test_images_are_read_as_the_encoders_bands_and_all_bands_statistics(eurosat):
    root, written = eurosat
    catalog = es.list_eurosat(root)
    picked = np.array([0, 13, 59])
    images = es.read_images(catalog, picked)
    for i, k in enumerate(picked):
        data = written[catalog.names[k]]
        assert np.array_equal(images.bands[i], data[ENCODER_BANDS_IN_FILE])
        scaled = data.reshape(13, -1) / 10_000.0
        assert np.allclose(images.band_stats[i], np.r_[scaled.mean(1), scaled.std(1)], atol=1e-6)
    assert images.labels.tolist() == catalog.labels[picked].tolist()


def test_the_stratified_split_is_seeded_disjoint_and_per_class():
    labels = np.repeat(np.arange(10), 6)
    train, test = es.stratified_split(labels, test_fraction=0.2, seed=3)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 60
    assert np.bincount(labels[test]).tolist() == [1] * 10  # round(6 * 0.2) of each class
    again = es.stratified_split(labels, test_fraction=0.2, seed=3)
    other = es.stratified_split(labels, test_fraction=0.2, seed=4)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)


def test_split_files_name_images_with_any_suffix(eurosat, tmp_path):
    root, _ = eurosat
    catalog = es.list_eurosat(root)
    (tmp_path / "train.txt").write_text("AnnualCrop_1.jpg\nForest_2.tif\n")
    (tmp_path / "test.txt").write_text("SeaLake_6\n")
    train, test = es.split_from_files(catalog, [tmp_path / "train.txt", tmp_path / "test.txt"])
    assert [catalog.names[i] for i in train] == ["AnnualCrop_1", "Forest_2"]
    assert [catalog.names[i] for i in test] == ["SeaLake_6"]
    (tmp_path / "bad.txt").write_text("Forest_99.jpg\n")
    with pytest.raises(DatasetError, match="not under"):
        es.split_from_files(catalog, [tmp_path / "bad.txt"])
