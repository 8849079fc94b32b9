"""Extending the sample archive's period: ``ArchiveSpec.until``, :func:`extend_archive`, ``pimc archive extend``.

The reference for every extension is a full build of the spec with the later ``until`` (the generator's other
path): the new items, COGs and collection must equal what it writes, read back through GDAL and JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
import rasterio

from pimc_ray.errors import InvalidConfigError, InvalidDateRangeError, PimcError, StorageError
from pimc_ray.local import archive
from pimc_ray.local.archive import (
    S2_COLLECTION,
    ArchiveInfo,
    ArchiveSpec,
    acquisition_dates,
    build_archive,
    dn_carries_offset,
    extend_archive,
    render_scene,
    scene_item_id,
)

# Three tiles, 13 dates over 2022; the base archive ends on 30 June (6 dates: 3 Jan .. 2 June).
FULL = ArchiveSpec(tile_size=64, revisit_days=30)
BASE = dataclasses.replace(FULL, until=dt.date(2022, 6, 30))
JUNE_30, YEAR_END = dt.date(2022, 6, 30), dt.date(2022, 12, 31)
#: The keys of ``archive.json``'s spec before ``until`` existed.
OLD_SPEC_KEYS = [
    "seed",
    "tile_size",
    "year",
    "revisit_days",
    "convention",
    "tiles",
    "cloud_rate",
    "calendar",
    "field_size",
    "class_set",
    "haze",
    "years",
]


@pytest.fixture(scope="module")
def full_archive(tmp_path_factory: pytest.TempPathFactory) -> ArchiveInfo:
    return build_archive(tmp_path_factory.mktemp("full") / "archive", FULL)


def _path(href: str) -> Path:
    return Path(url2pathname(urlparse(href).path))


def _rooted(line: str, root: Path) -> str:
    """An item line with the archive's location replaced, to compare archives built in different folders."""
    return line.replace(root.as_uri(), "ROOT").replace(str(root), "ROOT")


def _lines(info: ArchiveInfo) -> list[str]:
    return [_rooted(line, info.root) for line in info.items_path.read_text().splitlines()]


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (hidden ones too), with ``root`` itself replaced in text files."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix in (".json", ".ndjson"):
            data = data.replace(root.as_uri().encode(), b"ROOT").replace(str(root).encode(), b"ROOT")
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def _hrefs_exist(info: ArchiveInfo) -> bool:
    return all(_path(a["href"]).is_file() for item in info.read_items() for a in item["assets"].values())


# --- the spec -----------------------------------------------------------------------------------------------


def test_until_ends_the_calendar_and_is_stored_only_when_set() -> None:
    dates = acquisition_dates(FULL)
    assert acquisition_dates(BASE) == [d for d in dates if d <= JUNE_30] == dates[:6]
    assert ArchiveSpec(tile_size=64, revisit_days=30, until="2022-06-30") == BASE
    assert ArchiveSpec(until=dt.datetime(2022, 6, 30, 12)).until == JUNE_30
    assert ArchiveSpec(until="2022-12-31") == ArchiveSpec()  # the year's end is the default archive
    assert ArchiveSpec(years=2, until="2021-07-01").until == dt.date(2021, 7, 1)
    assert (
        list(FULL.to_dict()) == OLD_SPEC_KEYS
    )  # archive.json of archives built before `until` compare equal
    assert BASE.to_dict() == {**FULL.to_dict(), "until": "2022-06-30"}
    stored = json.loads(json.dumps(BASE.to_dict()))
    assert ArchiveSpec(**{**stored, "tiles": tuple(stored["tiles"])}) == BASE


@pytest.mark.parametrize("bad", ["2023-01-01", "2022-01-02", "2021-12-31", "June", "2022-13-01", 20220630])
def test_until_outside_the_period_is_refused_naming_it(bad: Any) -> None:
    with pytest.raises(ValueError, match="until"):
        ArchiveSpec(until=bad)


def test_a_scene_does_not_depend_on_until() -> None:
    june_2 = acquisition_dates(BASE)[-1]
    for tile in FULL.tiles:
        short, whole = render_scene(BASE, tile, june_2), render_scene(FULL, tile, june_2)
        for field in dataclasses.fields(whole):
            np.testing.assert_array_equal(getattr(short, field.name), getattr(whole, field.name))
        for date in acquisition_dates(FULL):  # after 30 June too: DNs and ids of the scenes an extension adds
            assert dn_carries_offset(BASE, tile, date) == dn_carries_offset(FULL, tile, date)
            assert scene_item_id(BASE, tile, date) == scene_item_id(FULL, tile, date)


def test_an_archive_built_before_until_existed_is_reused(full_archive: ArchiveInfo) -> None:
    manifest = json.loads((full_archive.root / "archive.json").read_text())
    assert list(manifest["spec"]) == OLD_SPEC_KEYS and "tile_until" not in manifest
    assert full_archive.tile_until == dict.fromkeys(FULL.tiles, YEAR_END) and not full_archive.extended
    stamp = full_archive.items_path.stat().st_mtime_ns
    again = build_archive(full_archive.root, FULL)
    assert not again.built and again == dataclasses.replace(full_archive, built=False)
    assert full_archive.items_path.stat().st_mtime_ns == stamp


# --- extending ----------------------------------------------------------------------------------------------


def test_extending_one_tile_adds_what_a_full_build_holds(tmp_path: Path, full_archive: ArchiveInfo) -> None:
    base = build_archive(tmp_path / "archive", BASE)
    before = _lines(base)
    scene_dirs = sorted(p for p in (base.root / S2_COLLECTION).glob("*/*/*/*"))
    calls: list[tuple[int, int]] = []

    info = extend_archive(base.root, YEAR_END, tiles=["33TTL"], progress=lambda *c: calls.append(c))

    assert info.built and calls == [(k, 7) for k in range(1, 8)]  # 7 dates from 2 July to 29 December
    assert info.tile_until == {"32TQR": JUNE_30, "32TQS": JUNE_30, "33TTL": YEAR_END}
    assert info.spec == BASE and info.extended and info.acquisitions("33TTL") == acquisition_dates(FULL)
    assert (info.n_scene_items, info.n_cogs) == (18 + 7, base.n_cogs + 7 * 11)
    after = _lines(info)
    new = [line for line in after if line not in before]
    full_items = {item["id"]: item for item in full_archive.read_items(S2_COLLECTION)}
    expected = [scene_item_id(FULL, "33TTL", d) for d in acquisition_dates(FULL) if d > JUNE_30]
    assert [json.loads(line)["id"] for line in new] == expected
    full_lines = dict(zip(full_items, _lines(full_archive), strict=False))
    assert new == [full_lines[i] for i in expected]  # the same items, properties and hrefs
    assert after == [*before[:18], *new, *before[18:]]  # the tile's items by date, the labels last
    # the new COGs: the same pixels (GDAL reading both back) and the same bytes as the full build's
    for item in (json.loads(line.replace("ROOT", info.root.as_uri())) for line in new):
        for key, asset in item["assets"].items():
            reference = _path(full_items[item["id"]]["assets"][key]["href"])
            with rasterio.open(_path(asset["href"])) as ours, rasterio.open(reference) as theirs:
                np.testing.assert_array_equal(ours.read(1), theirs.read(1))
            assert _path(asset["href"]).read_bytes() == reference.read_bytes()
    assert _hrefs_exist(info)
    # the other tiles untouched, the collection's extent that of the full build
    grown = sorted(p for p in (base.root / S2_COLLECTION).glob("*/*/*/*"))
    added = [p for p in grown if p not in scene_dirs]
    assert len(added) == 7 and {p.parts[-4] for p in added} == {"33TTL"}
    for collection in info.collection_paths:
        ours, theirs = info.collection_paths[collection], full_archive.collection_paths[collection]
        assert _rooted(ours.read_text(), info.root) == _rooted(theirs.read_text(), full_archive.root)
    assert sorted(p.name for p in info.root.iterdir()) == sorted(p.name for p in full_archive.root.iterdir())

    # the same extension again: nothing to do, nothing written
    stamps = [p.stat().st_mtime_ns for p in (info.items_path, info.root / "archive.json")]
    again = extend_archive(base.root, "2022-12-31", tiles=["33TTL"])
    assert not again.built and again == dataclasses.replace(info, built=False)
    assert [p.stat().st_mtime_ns for p in (info.items_path, info.root / "archive.json")] == stamps
    # building the base spec again gives the base archive, not the extended one
    rebuilt = build_archive(base.root, BASE)
    assert rebuilt.built and not rebuilt.extended and _lines(rebuilt) == before


def test_extending_every_tile_gives_the_later_archive_byte_for_byte(
    tmp_path: Path, full_archive: ArchiveInfo
) -> None:
    root = build_archive(tmp_path / "archive", BASE).root
    middle = extend_archive(root, "2022-09-30", tiles=["32TQS"])
    assert (
        middle.tile_until["32TQS"] == dt.date(2022, 9, 30) and middle.n_scene_items == 18 + 4
    )  # 2 July .. 30 September
    info = extend_archive(root, YEAR_END)  # every tile, each from its own end
    assert info.spec == FULL and not info.extended
    assert _digest(root) == _digest(full_archive.root)  # archive.json included: no staging left behind
    assert not build_archive(root, FULL).built  # the full spec's archive, reused as such


def test_an_interrupted_extension_leaves_a_consistent_archive(
    tmp_path: Path, full_archive: ArchiveInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = build_archive(tmp_path / "archive", BASE)
    before = _digest(base.root)
    rendered: list[Any] = []

    def third_render_fails(*args: Any) -> Any:
        if len(rendered) == 2:
            raise RuntimeError("killed")
        rendered.append(args)
        return render_scene(*args)

    with monkeypatch.context() as patch:  # while rendering: nothing of the extension is left
        patch.setattr(archive, "render_scene", third_render_fails)
        with pytest.raises(RuntimeError, match="killed"):
            extend_archive(base.root, YEAR_END, tiles=["32TQR"])
    assert _digest(base.root) == before

    replace_text = archive._replace_text

    def manifest_fails(path: Path, text: str) -> None:
        if path.name == "archive.json":
            raise OSError("disk full")
        replace_text(path, text)

    with monkeypatch.context() as patch:  # after items.ndjson, before archive.json: every href still resolves
        patch.setattr(archive, "_replace_text", manifest_fails)
        with pytest.raises(OSError, match="disk full"):
            extend_archive(base.root, YEAR_END, tiles=["32TQR"])
    assert _hrefs_exist(base) and len(base.read_items(S2_COLLECTION)) == 18 + 7

    info = extend_archive(base.root, YEAR_END, tiles=["32TQR"])  # running it again completes it
    assert info.built and info.n_scene_items == 18 + 7 and _hrefs_exist(info)
    ids = [item["id"] for item in info.read_items(S2_COLLECTION)]
    assert len(set(ids)) == len(ids) == 18 + 7
    assert ids[:13] == [scene_item_id(FULL, "32TQR", d) for d in acquisition_dates(FULL)]


def test_extension_errors_are_one_line_naming_the_fix(tmp_path: Path) -> None:
    spec = ArchiveSpec(tile_size=32, tiles=("32TQR", "33TTL"), revisit_days=60, until="2022-03-31")
    info = build_archive(tmp_path / "archive", spec)
    before = _digest(info.root)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    cases: list[tuple[type[PimcError], str, dict[str, Any]]] = [
        (StorageError, "pimc archive build --out", {"out_dir": tmp_path / "none"}),
        (StorageError, "pimc archive build --out", {"out_dir": tmp_path / "foreign"}),
        (InvalidDateRangeError, "at the latest", {"until": "2023-01-15"}),
        (InvalidDateRangeError, "never shortened", {"until": "2022-02-01"}),
        (InvalidDateRangeError, "YYYY-MM-DD", {"until": "2022-13-01"}),
        (InvalidConfigError, "99XYZ", {"tiles": ["99XYZ"]}),
        (InvalidConfigError, "32TQS", {"tiles": ["32TQR", "32TQS"]}),  # a sample tile, not this archive's
    ]
    for error, match, kwargs in cases:
        call = {"out_dir": info.root, "until": "2022-12-31", **kwargs}
        with pytest.raises(error, match=match) as raised:
            extend_archive(call.pop("out_dir"), call.pop("until"), **call)
        assert "\n" not in str(raised.value) and raised.value.exit_code == 2
    assert _digest(info.root) == before


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pimc_ray.cli import main

    out = str(tmp_path / "archive")
    options = ["--tile-size", "32", "--tiles", "32TQR,33TTL", "--revisit-days", "60"]
    assert main(["archive", "build", "--out", out, *options, "--until", "2022-03-31"]) == 0
    printed = capsys.readouterr().out
    assert "items 6/6" in printed and "2 acquisitions, 2022-01-03 .. 2022-03-04" in printed

    assert main(["archive", "extend", "--out", out, "--until", "2022-12-31", "--tiles", "33TTL"]) == 0
    printed = capsys.readouterr().out
    assert (
        "new scenes 1/5" in printed and "new scenes 5/5" in printed and "sample archive extended" in printed
    )
    manifest = json.loads((tmp_path / "archive" / "archive.json").read_text())
    assert manifest["tile_until"] == {"32TQR": "2022-03-31", "33TTL": "2022-12-31"}
    assert manifest["counts"]["scene_items"] == 2 + 7

    assert main(["archive", "extend", "--out", out, "--until", "2022-12-31", "--tiles", "33TTL"]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["archive", "extend", "--out", out, "--until", "2022-02-01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "never shortened" in err and "\n" not in err
    assert main(["archive", "build", "--out", str(tmp_path / "b"), *options, "--until", "2021-06-01"]) == 2
    assert "until" in capsys.readouterr().err


def test_a_running_stac_server_serves_the_items_it_started_with(tmp_path: Path) -> None:
    from pimc_ray.local.stac_server import LocalStacServer

    spec = ArchiveSpec(tile_size=32, tiles=("32TQR", "33TTL"), revisit_days=60, until="2022-03-31")
    info = build_archive(tmp_path / "archive", spec)

    def count(server: LocalStacServer) -> int:
        body = json.dumps({"collections": [S2_COLLECTION], "limit": 100}).encode()
        request = urllib.request.Request(
            f"{server.url}/search", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return len(json.load(response)["features"])

    server = LocalStacServer(info.items_path, workdir=tmp_path / "stac")
    with server:
        assert count(server) == 4
        extend_archive(info.root, "2022-12-31", tiles=["33TTL"])
        assert count(server) == 4  # the parquet it translated at start
    with server:  # restarted: items.ndjson is newer than the parquet, which start() translates again
        assert count(server) == 4 + 5
