"""Build ``pimc_ray/runs/naturalearth_lowres.geojson``, the country polygons that run specs name regions by.

How the vendored file was made (run from the repository root; nothing else is needed, no GDAL vector driver)::

    .venv/bin/pip download --no-deps geopandas==0.14.4 -d /tmp/gpd
    .venv/bin/python infra/regions/build_regions.py /tmp/gpd/geopandas-0.14.4-py3-none-any.whl

The geopandas 0.14.4 wheel ships Natural Earth's 1:110m "Admin 0 - Countries" as the shapefile
``geopandas/datasets/naturalearth_lowres`` (177 countries; columns pop_est, continent, name, iso_a3, gdp_md_est;
geopandas' own ``naturalearth_creation.py`` made it, filling missing ISO codes from ADM0_A3 and moving Crimea to
Ukraine). Later geopandas releases dropped it. This script reads the shapefile straight from the wheel with the
small reader below (fixed-width .dbf records, Polygon .shp records), and writes one GeoJSON Feature per country
with the properties ``name``, ``iso_a3`` and ``continent``, its coordinates rounded to 4 decimals (about 11 m, far
below the 1:110m scale's ~10 km detail), one feature per line.

One change to the data: Natural Earth's France includes French Guiana (South America); it is split out as its own
feature ``French Guiana`` (``GUF``, continent ``South America``), so that ``France`` and ``Europe`` mean metropolitan
France (with Corsica).

Natural Earth is public domain (https://www.naturalearthdata.com/about/terms-of-use/); see
``pimc_ray/runs/naturalearth_lowres.LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import shapely
import shapely.geometry
from shapely.geometry import LinearRing, MultiPolygon, Polygon, box

MEMBER = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
OUT = Path(__file__).resolve().parents[2] / "pimc_ray" / "runs" / "naturalearth_lowres.geojson"
DECIMALS = 4

#: Parts of a Natural Earth country made features of their own: (country, bbox of the part, name, ISO A3, continent).
SPLITS = [("France", (-55.0, 1.0, -51.0, 6.0), "French Guiana", "GUF", "South America")]


def read_dbf(data: bytes, encoding: str) -> list[dict[str, str]]:
    """The records of a dBASE III table as strings (stripped), by field name."""
    count, header_len, record_len = struct.unpack("<IHH", data[4:12])
    fields: list[tuple[str, int]] = []
    pos = 32
    while data[pos] != 0x0D:
        name = data[pos : pos + 11].split(b"\0")[0].decode("ascii")
        fields.append((name, data[pos + 16]))
        pos += 32
    rows = []
    for i in range(count):
        rec = data[header_len + i * record_len : header_len + (i + 1) * record_len]
        if rec[:1] == b"*":  # deleted
            continue
        row, offset = {}, 1
        for name, width in fields:
            row[name] = rec[offset : offset + width].decode(encoding).strip()
            offset += width
        rows.append(row)
    return rows


def read_shp_polygons(data: bytes) -> list[Polygon | MultiPolygon]:
    """The (multi)polygons of a Polygon shapefile (type 5): clockwise rings are shells, the others holes."""
    if struct.unpack(">i", data[:4])[0] != 9994 or struct.unpack("<i", data[32:36])[0] != 5:
        raise ValueError("not a Polygon shapefile")
    end = struct.unpack(">i", data[24:28])[0] * 2
    pos, shapes = 100, []
    while pos < end:
        _, words = struct.unpack(">ii", data[pos : pos + 8])
        content = data[pos + 8 : pos + 8 + words * 2]
        pos += 8 + words * 2
        kind = struct.unpack("<i", content[:4])[0]
        if kind != 5:
            raise ValueError(f"record of shape type {kind}, expected 5 (Polygon)")
        n_parts, n_points = struct.unpack("<ii", content[36:44])
        starts = list(struct.unpack(f"<{n_parts}i", content[44 : 44 + 4 * n_parts]))
        xy = struct.unpack(f"<{2 * n_points}d", content[44 + 4 * n_parts : 44 + 4 * n_parts + 16 * n_points])
        points = list(zip(xy[0::2], xy[1::2], strict=True))
        rings = [points[a:b] for a, b in zip(starts, [*starts[1:], n_points], strict=True)]
        shells = [r for r in rings if not LinearRing(r).is_ccw]
        holes = [r for r in rings if LinearRing(r).is_ccw]
        polygons = []
        for shell in shells:
            outer = Polygon(shell)
            inside = [h for h in holes if outer.contains(Polygon(h).representative_point())]
            polygons.append(Polygon(shell, inside))
        shapes.append(polygons[0] if len(polygons) == 1 else MultiPolygon(polygons))
    return shapes


def rounded(geometry: Any) -> Any:
    """``geometry`` with coordinates rounded to :data:`DECIMALS`, oriented (shells counter-clockwise) and valid."""
    out = shapely.set_precision(geometry, 10.0**-DECIMALS)
    out = shapely.make_valid(out) if not out.is_valid else out
    polygons = [g for g in getattr(out, "geoms", [out]) if g.geom_type == "Polygon" and not g.is_empty]
    merged = polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)
    return shapely.geometry.polygon.orient(merged) if merged.geom_type == "Polygon" else _orient_multi(merged)


def _orient_multi(geometry: MultiPolygon) -> MultiPolygon:
    return MultiPolygon([shapely.geometry.polygon.orient(p) for p in geometry.geoms])


def _feature(name: str, iso_a3: str, continent: str, geometry: Any) -> dict[str, Any]:
    mapped = json.loads(json.dumps(shapely.geometry.mapping(rounded(geometry))))

    def fix(value: Any) -> Any:  # -0.0 and 12.30000001 from the float grid: round once more for the text
        if isinstance(value, list):
            return [fix(v) for v in value]
        return round(value, DECIMALS) + 0.0 if isinstance(value, float) else value

    mapped["coordinates"] = fix(mapped["coordinates"])
    props = {"name": name, "iso_a3": iso_a3, "continent": continent}
    return {"type": "Feature", "properties": props, "geometry": mapped}


def build(wheel: Path) -> list[dict[str, Any]]:
    """The features of the vendored file, from the geopandas 0.14.4 wheel (or a folder it was unzipped into)."""
    if wheel.is_dir():
        base = wheel / MEMBER
        shp, dbf, cpg = (base.with_suffix(s).read_bytes() for s in (".shp", ".dbf", ".cpg"))
    else:
        with zipfile.ZipFile(wheel) as z:
            shp, dbf, cpg = (z.read(MEMBER + s) for s in (".shp", ".dbf", ".cpg"))
    rows = read_dbf(dbf, io.TextIOWrapper(io.BytesIO(cpg)).read().strip() or "latin-1")
    shapes = read_shp_polygons(shp)
    features = []
    for row, geometry in zip(rows, shapes, strict=True):
        for country, bounds, name, iso, continent in SPLITS:
            if row["name"] == country:
                part = geometry.intersection(box(*bounds))
                geometry = geometry.difference(box(*bounds))
                features.append(_feature(name, iso, continent, part))
        features.append(_feature(row["name"], row["iso_a3"], row["continent"], geometry))
    return sorted(features, key=lambda f: f["properties"]["name"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "wheel", type=Path, help="geopandas-0.14.4-py3-none-any.whl, or the folder it was unzipped into"
    )
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    features = build(args.wheel)
    lines = [json.dumps(f, separators=(",", ":"), ensure_ascii=False) for f in features]
    text = '{"type":"FeatureCollection","features":[\n' + ",\n".join(lines) + "\n]}\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"{len(features)} features, {len(text.encode()) / 1e3:.0f} kB -> {args.out}")


if __name__ == "__main__":
    main()
