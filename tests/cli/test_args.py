"""Path options take URIs: local paths and ``file://`` become absolute paths, ``s3://`` stays, the rest is refused by
argparse with the reason."""

import re

import pytest

from pimc_ray.cli.jobs import embed_parser, train_head_parser

CATALOG = ["--start", "2022-01-01", "--end", "2022-12-31", "--stac-url", "http://127.0.0.1:9"]


def test_path_options_are_normalised_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = embed_parser().parse_args(
        ["--aoi", "11,45,11.1,45.1", "--out", "s3://bucket/maps/run1", *CATALOG,
         "--checkpoint", "s3://bucket/models/enc/", "--head", f"file://{tmp_path}/head",
         "--snapshot", "items.parquet"]
    )  # fmt: skip
    assert args.checkpoint == "s3://bucket/models/enc"
    assert args.head == str(tmp_path / "head")
    assert args.snapshot == str(tmp_path / "items.parquet")
    args = train_head_parser().parse_args(["--labels", "s3://bucket/labels/fields.geojson", *CATALOG])
    assert args.labels == "s3://bucket/labels/fields.geojson"


@pytest.mark.parametrize(
    ("value", "message"),
    [("gs://bucket/enc", "gs:// .Google Cloud Storage. is not configured"), ("s3:///enc", "names no bucket")],
)
def test_unusable_uris_are_refused_with_the_reason(value, message, capsys):
    with pytest.raises(SystemExit) as exited:
        train_head_parser().parse_args(["--checkpoint", value, "--labels-collection", "c", *CATALOG])
    assert exited.value.code == 2 and re.search(message, capsys.readouterr().err)
