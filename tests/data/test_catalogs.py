"""Catalog conventions: asset keys and the BOA_ADD_OFFSET rule."""

import pytest

from pimc_ray.data.catalogs import (
    EARTH_SEARCH,
    PLANETARY_COMPUTER,
    detect_convention,
    harmonisation,
    parse_baseline,
)
from pimc_ray.errors import UnknownCatalogError


def item(assets, **props):
    return {"id": "x", "assets": dict.fromkeys(assets, {}), "properties": props}


ES_ASSETS = ["blue", "red", "nir", "scl"]
PC_ASSETS = ["B02", "B04", "B08", "SCL"]


@pytest.mark.parametrize(
    ("assets", "props", "expected_offset"),
    [
        (ES_ASSETS, {"s2:processing_baseline": "03.01"}, 0.0),
        (ES_ASSETS, {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}, 0.0),
        (ES_ASSETS, {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}, -0.1),
        (ES_ASSETS, {"s2:processing_baseline": "05.09"}, -0.1),
        (PC_ASSETS, {"s2:processing_baseline": "02.14"}, 0.0),
        (PC_ASSETS, {"s2:processing_baseline": "04.00"}, -0.1),
        (PC_ASSETS, {"s2:processing_baseline": "05.10"}, -0.1),
        (PC_ASSETS, {}, 0.0),
    ],
)
def test_offset_removed_exactly_once(assets, props, expected_offset):
    it = item(assets, **props)
    scale, offset = harmonisation(it, detect_convention(it))
    assert scale == 1e-4
    assert offset == pytest.approx(expected_offset)
    # A DN of 2000 is 0.2 reflectance before 04.00 / when already harmonised, 0.1 when it carries the offset.
    assert 2000 * scale + offset == pytest.approx(0.2 + expected_offset)


def test_raster_bands_offset_is_not_trusted():
    # Earth Search publishes offset -0.1 on items whose DNs are already harmonised (earth-search issues 9, 66).
    it = item(ES_ASSETS, **{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True})
    it["assets"]["red"] = {"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}
    assert harmonisation(it, EARTH_SEARCH) == (1e-4, 0.0)


def test_detection_and_keys():
    assert detect_convention(item(ES_ASSETS)) is EARTH_SEARCH
    assert detect_convention(item(PC_ASSETS)) is PLANETARY_COMPUTER
    assert EARTH_SEARCH.asset_key("B8A") == "nir08"
    assert PLANETARY_COMPUTER.asset_key("SCL") == "SCL"
    with pytest.raises(UnknownCatalogError, match="match no known"):
        detect_convention(item(["band1"]))
    with pytest.raises(UnknownCatalogError, match="no asset"):
        EARTH_SEARCH.asset_key("B01")


def test_parse_baseline():
    assert parse_baseline("04.00") == (4, 0)
    assert parse_baseline("N0511".lstrip("N")[:2] + ".11") == (5, 11)
    with pytest.raises(UnknownCatalogError, match="unparsable"):
        parse_baseline("four")
