"""Path options take URIs: local paths and ``file://`` become absolute paths, ``s3://`` stays, the rest is refused by
argparse with the reason."""

import re

import pytest

from pimc_ray.cli.jobs import embed_parser, pretrain_parser, train_head_parser

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


#: The required options of a mapping job, valid.
JOB_ARGS = ["--aoi", "1,2,3,4", "--start", "2022-01-01", "--end", "2022-12-31", "--stac-url", "http://x",
            "--out", "o"]  # fmt: skip


@pytest.mark.parametrize("flag", ["--aoi", "--head-train-aoi"])
def test_a_western_hemisphere_bbox_is_a_value_not_an_option(flag):
    """argparse alone reads ``--aoi -122.5,...`` as an option without its value ("expected one argument")."""
    base = JOB_ARGS
    args = embed_parser().parse_args([*base, flag, "-122.5,37.7,-122.3,37.9", "--steps", "-3"])
    assert getattr(args, flag[2:].replace("-", "_")) == "-122.5,37.7,-122.3,37.9" and args.steps == -3
    pretrain = pretrain_parser().parse_args(["--aoi", "-1,2,3,4", "--aoi", "5,6,7,8", *base[2:]])
    assert pretrain.aoi == ["-1,2,3,4", "5,6,7,8"]
    with pytest.raises(SystemExit):  # an option where its value should be is still an error
        embed_parser().parse_args([*base, "--aoi", "--steps", "3"])


def test_steps_have_an_upper_bound_named_with_its_memory():
    from pimc_ray.cli.args import series_spec
    from pimc_ray.errors import InvalidConfigError

    base = JOB_ARGS
    assert series_spec(embed_parser().parse_args([*base, "--steps", "128"])).timegrid.steps == 128
    with pytest.raises(InvalidConfigError, match=r"--steps 2000 is above 128: .* 48\.0 MB each"):
        series_spec(embed_parser().parse_args([*base, "--steps", "2000"]))
