"""AOI normalisation and validation."""

import json

import pytest
import shapely.geometry

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.tiles import split_by_zone
from pimc_ray.errors import InvalidAOIError

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[11.0, 45.0], [11.1, 45.0], [11.1, 45.1], [11.0, 45.1], [11.0, 45.0]]],
}


@pytest.mark.parametrize(
    "like",
    [
        "11.0,45.0,11.1,45.1",
        "11.0 45.0 11.1 45.1",
        [11.0, 45.0, 11.1, 45.1],
        SQUARE,
        {"type": "Feature", "properties": {}, "geometry": SQUARE},
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {}, "geometry": SQUARE}],
        },
        json.dumps(SQUARE),
        shapely.geometry.shape(SQUARE),
    ],
)
def test_every_input_form_gives_the_same_polygon(like):
    aoi = load_aoi(like)
    assert aoi.geometry.equals(shapely.geometry.box(11.0, 45.0, 11.1, 45.1))
    assert aoi.bounds == pytest.approx((11.0, 45.0, 11.1, 45.1))


def test_geojson_file_and_geo_interface(tmp_path):
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(SQUARE))
    assert load_aoi(str(path)).geometry.equals(load_aoi(path).geometry)

    class Thing:
        __geo_interface__ = SQUARE

    assert load_aoi(Thing()).bounds == pytest.approx((11.0, 45.0, 11.1, 45.1))


@pytest.mark.parametrize(
    ("like", "words"),
    [
        ("11.1,45.0,11.0,45.1", "reversed"),
        ("1,2,3", "cannot read"),
        ({"type": "Point", "coordinates": [11, 45]}, "not a Polygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, "self-intersect"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ("missing.geojson", "does not exist"),
        ("{not json", "not valid JSON"),
        ([170.0, 0.0, 190.0, 1.0], "outside lon"),
        ("170,-20,-170,-10", r"crosses the antimeridian .* two runs, 170,-20,180,-10 and -180,-20,-170,-10"),
        (
            {"type": "Polygon", "coordinates": [[[-179, 0], [179, 0], [179, 1], [-179, 1], [-179, 0]]]},
            "antimeridian",
        ),
    ],
)
def test_bad_aoi_names_the_problem(like, words):
    with pytest.raises(InvalidAOIError, match=words):
        load_aoi(like)


def test_split_by_zone_cuts_at_the_meridian():
    parts = split_by_zone(load_aoi("11.9,45.4,12.1,45.6"))
    assert sorted(parts) == [32632, 32633]
    assert parts[32632].bounds[2] == pytest.approx(12.0)
    assert parts[32633].bounds[0] == pytest.approx(12.0)
    assert sum(p.area for p in parts.values()) == pytest.approx(0.2 * 0.2)
    assert list(split_by_zone(load_aoi("-60.1,-10,-60,-9.9"))) == [32720]
