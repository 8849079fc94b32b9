"""Every option of every job and ``pimc`` command, given a bad value: exit code 2, an ``error:`` line naming the
problem, and nothing written.

The cases are checked against the parsers themselves: an option without a case here (or without a reason in
:data:`ANY_VALUE`) fails :func:`test_every_option_has_a_bad_input_case`, so a new option cannot ship without one.
Flags (options without a value) have no bad value and are left out. Values are checked before any work: each case
runs the command in this process against the local STAC API and ends within seconds.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import pytest

from pimc_ray.cli import build_parser, main
from pimc_ray.cli.jobs import (
    embed_parser,
    indices_parser,
    pretrain_parser,
    train_forecast_parser,
    train_head_parser,
)
from pimc_ray.errors import EXIT_BAD_INPUT
from pimc_ray.local import demo_aoi, demo_train_aoi
from tests.evaluation.fixtures import write_eurosat, write_pastis
from tests.specs import TEST_SPEC

PARSERS = {
    "embed": embed_parser,
    "classify": embed_parser,
    "indices": indices_parser,
    "pretrain": pretrain_parser,
    "train-head": train_head_parser,
    "train-forecast": train_forecast_parser,
}
#: One bad value per option of the area jobs (embed, classify, indices) and the words its error says.
AREA = {
    "--aoi": ("12.1,45.5,12.0", "cannot read an AOI"),
    "--start": ("2022-13-01", "not an ISO date"),
    "--end": ("yesterday", "not an ISO date"),
    "--stac-url": ("http://127.0.0.1:9", "cannot reach the STAC API"),
    "--collection": ("no-such-collection", "no 'no-such-collection' items"),
    "--catalog": ("landsat", "invalid choice"),
    "--max-cloud-cover": ("lots", "invalid float value"),
    "--snapshot": ("gs://bucket/items.ndjson", "gs://"),
    "--out": ("gs://bucket/out", "gs://"),
    "--steps": ("0", "--steps must be at least 1"),
    "--min-valid": ("-2", "--min-valid must be at least 1"),
    "--on-unreadable": ("ignore", "invalid choice"),
    "--window-size": ("0", "--window-size must be at least 1"),
    "--workers": ("-1", "workers"),
    "--cpus-per-worker": ("0", "cpus_per_worker"),
    "--gpus-per-worker": ("-1", "gpus_per_worker"),
    "--readers": ("0", "readers"),
    "--read-cpus": ("-1", "read_cpus"),
}


def area(*options: str) -> dict[str, tuple[str, str]]:
    """The cases of some of the area jobs' options (the jobs that share only those)."""
    return {option: AREA[option] for option in options}


CASES: dict[str, dict[str, tuple[str, str]]] = {
    "embed": {
        **AREA,
        "--checkpoint": ("/nonexistent/model", "/nonexistent/model"),
        "--head": ("/nonexistent/head", "/nonexistent/head"),
        "--forecast-head": ("/nonexistent/forecast", "/nonexistent/forecast"),
        "--head-train-aoi": ("not-a-file.geojson", "does not exist"),
        "--labels-collection": ("no-such-labels", "no 'no-such-labels' items"),
        "--batch-size": ("0", "--batch-size must be at least 1"),
        "--tile-size": ("100", "multiple of 16"),
        "--precision": ("float16", "--precision must be one of float32, bfloat16"),
    },
    "indices": dict(AREA),
    "pretrain": {
        **{
            k: v
            for k, v in AREA.items()
            if k
            not in (
                "--on-unreadable",
                "--cpus-per-worker",
                "--workers",
                "--gpus-per-worker",
                "--readers",
                "--read-cpus",
            )
        },
        "--storage": ("gs://bucket/runs", "gs://"),
        "--s3-endpoint": ("not a url", "--s3-endpoint"),
        "--train-steps": ("0", "steps must be at least 1"),
        "--batch-size": ("0", "batch_size must be at least 1"),
        "--lr": ("-1", "lr"),
        "--weight-decay": ("-1", "weight_decay"),
        "--warmup-steps": ("-5", "warmup_steps"),
        "--checkpoint-every": ("0", "checkpoint_every must be at least 1"),
        "--keep-checkpoints": ("0", "keep_checkpoints must be at least 1"),
        "--log-every": ("0", "log_every must be at least 1"),
        "--temperature": ("0", "temperature must be above 0 (--temperature)"),
        "--rp-widths": ("16,x", "--rp-widths"),
        "--patch-size": ("8", "patch_size"),
        "--composite": ("mean", "composite"),
        "--pixels-per-window": ("0", "pixels_per_window"),
        "--time-shift": ("-1", "time_shift"),
        "--haze": ("2", "haze"),
        "--shuffle-buffer": ("-1", "shuffle_buffer"),
        "--workers": ("0", "workers"),
        "--cpus-per-worker": ("0", "cpus_per_worker"),
        "--readers": ("0", "readers"),
        "--reader-cpus": ("0", "reader_cpus"),
        "--reader-cache-mb": ("-1", "cache_mb must not be negative"),
        "--max-failures": ("-1", "max_failures"),
    },
    "train-head": {
        **area(
            "--start",
            "--end",
            "--stac-url",
            "--catalog",
            "--steps",
            "--min-valid",
            "--window-size",
            "--max-cloud-cover",
        ),
        "--checkpoint": ("/nonexistent/model", "/nonexistent/model"),
        "--labels": ("/nonexistent/labels.geojson", "/nonexistent/labels.geojson"),
        "--labels-collection": ("no-such-labels", "no 'no-such-labels' items"),
        "--aoi": ("1,2,3", "cannot read an AOI"),
        "--collection": ("no-such-collection", "no 'no-such-collection' items"),
        "--snapshot": ("gs://bucket/items.ndjson", "gs://"),
        "--out": ("gs://bucket/head", "gs://"),
        "--per-class": ("0", "--per-class must be at least 1"),
        "--workers": ("-1", "workers"),
        "--batch-size": ("0", "--batch-size must be at least 1"),
    },
}
CASES["train-forecast"] = {
    **area(
        "--aoi",
        "--start",
        "--end",
        "--stac-url",
        "--collection",
        "--catalog",
        "--max-cloud-cover",
        "--snapshot",
        "--steps",
        "--min-valid",
        "--window-size",
    ),
    "--checkpoint": ("/nonexistent/model", "/nonexistent/model"),
    "--horizon": ("0", "--horizon must be at least 1"),
    "--out": ("gs://bucket/forecast", "gs://"),
    "--per-window": ("0", "--per-window must be at least 1"),
    "--workers": ("-1", "workers"),
    "--batch-size": ("0", "--batch-size must be at least 1"),
}
CASES["classify"] = CASES["embed"]
#: Options whose every value is valid, and why.
ANY_VALUE = {
    ("eval pastis", "--seed"): "any integer seeds",
    ("eval eurosat", "--seed"): "any integer seeds",
    ("pretrain", "--name"): "any name names a run",
    ("pretrain", "--seed"): "any integer seeds",
    ("train-head", "--seed"): "any integer seeds",
    ("train-forecast", "--seed"): "any integer seeds",
    ("train-head", "--labels-asset"): "an asset key; a wrong one is caught with the items (StacLabels)",
    ("train-head", "--class-property"): "a GeoJSON property; a wrong one is caught with the labels",
}


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options of a parser that take a value."""
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.nargs != 0}


def test_every_option_has_a_bad_input_case():
    missing = []
    for command, make in PARSERS.items():
        for option in options(make()):
            if option not in CASES[command] and (command, option) not in ANY_VALUE:
                missing.append(f"{command} {option}")
    for path, parser in _pimc_commands(build_parser(), []):
        for option in options(parser):
            if (path, option) not in PIMC_CASES and (path, option) not in ANY_VALUE:
                missing.append(f"pimc {path} {option}")
    assert not missing, f"options without a bad-input case in {__file__}: {missing}"


def _pimc_commands(parser: argparse.ArgumentParser, prefix: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in PARSERS:  # the jobs: their own parsers, above
                    yield from _pimc_commands(sub, [*prefix, name])
    if prefix:
        yield " ".join(prefix), parser


def base_args(command: str, stac_url: str, out: Path, checkpoint: str) -> dict[str, str]:
    aoi = demo_aoi(TEST_SPEC)
    common = {"--start": "2022-01-01", "--end": "2022-12-31", "--stac-url": stac_url}
    if command == "train-forecast":  # an encoder whose embedding holds the series, as a forecast needs
        return {**common, "--end": "2022-09-30", "--checkpoint": checkpoint, "--aoi": aoi, "--out": str(out)}
    if command == "train-head":
        return {**common, "--labels-collection": "pimc-sample-labels", "--aoi": aoi, "--out": str(out)}
    return {
        **common,
        "--aoi": aoi,
        "--out": str(out),
        **({"--workers": "0"} if command != "pretrain" else {}),
    }


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse
        return int(exit_.code or 0)


@pytest.mark.parametrize(
    ("command", "option"), [(c, o) for c in PARSERS for o in CASES[c]], ids=lambda v: str(v)
)
def test_a_bad_value_is_exit_2_one_error_line_and_nothing_written(
    stac_api, series_checkpoint, tmp_path, capsys, monkeypatch, command, option
):
    import ray

    def no_ray(*args, **kwargs):  # a value that passes its checks would start the work: minutes, not an error
        raise AssertionError(f"{command} {option} {value!r} was accepted: the job started Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    value, words = CASES[command][option]
    out = tmp_path / "out"
    args = base_args(command, stac_api.url, out, series_checkpoint)
    if command == "train-head" and option == "--labels":
        args.pop("--labels-collection")
    args[option] = value
    if option == "--labels-collection" and command in ("embed", "classify"):  # read only to fit a head
        args["--head-train-aoi"] = demo_train_aoi(TEST_SPEC)
    if option == "--out":
        out = Path(value)
    argv = [command, *[v for kv in args.items() for v in kv]]
    assert run(argv) == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and "error" in err[-1] and words in err[-1], err[-3:]
    if not str(out).startswith("gs://"):
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


PIMC_CASES: dict[tuple[str, str], tuple[list[str], str]] = {
    ("derive", "out"): (["derive", "{tmp}/nothing"], "holds no mapping run"),
    ("run validate", "spec"): (["run", "validate", "{tmp}/missing.yaml"], "missing.yaml"),
    ("run plan", "spec"): (["run", "plan", "{tmp}/missing.yaml"], "missing.yaml"),
    ("run plan", "--out"): (["run", "plan", "{spec}", "--out", "gs://b/p"], "gs://"),
    ("run plan", "--cpu-hour-price"): (["run", "plan", "{spec}", "--cpu-hour-price", "-1"], "price"),
    ("run plan", "--gpu-hour-price"): (
        ["run", "plan", "{spec}", "--gpu-hour-price", "cheap"],
        "invalid float",
    ),
    ("run plan", "--sample-tiles"): (["run", "plan", "{spec}", "--sample-tiles", "0"], "--sample-tiles"),
    ("run execute", "spec"): (["run", "execute", "{tmp}/missing.yaml"], "missing.yaml"),
    ("run execute", "--today"): (["run", "execute", "{spec}", "--today", "2022-02-30"], "not a date"),
    ("run execute", "--cpu-hour-price"): (["run", "execute", "{spec}", "--cpu-hour-price", "-1"], "price"),
    ("run execute", "--gpu-hour-price"): (
        ["run", "execute", "{spec}", "--gpu-hour-price", "x"],
        "invalid float",
    ),
    ("run execute", "--sample-tiles"): (
        ["run", "execute", "{spec}", "--sample-tiles", "0"],
        "--sample-tiles",
    ),
    ("archive extend", "--out"): (
        ["archive", "extend", "--out", "{tmp}/none", "--until", "2022-12-31"],
        "pimc archive build",
    ),
    ("archive extend", "--until"): (
        ["archive", "extend", "--out", "{tmp}/none", "--until", "soon"],
        "not a date",
    ),
    ("archive extend", "--tiles"): (
        ["archive", "extend", "--out", "{tmp}/none", "--until", "2022-12-31", "--tiles", "33TTL,33ttl"],
        "not a Sentinel-2 tile id",
    ),
    ("archive bbox", "--tile"): (["archive", "bbox", "--tile", "99XXX"], "no sample tile"),
    ("archive bbox", "--tile-size"): (["archive", "bbox", "--demo", "--tile-size", "100"], "tile_size"),
    ("stac serve", "--archive"): (["stac", "serve", "--archive", "{tmp}/none"], "pimc archive build"),
    ("stac serve", "--port"): (["stac", "serve", "--archive", "{tmp}/none", "--port", "http"], "invalid int"),
    ("s3 serve", "--bucket"): (["s3", "serve", "--bucket", "b"], "bucket"),
    ("s3 serve", "--data-dir"): (["s3", "serve", "--data-dir", "{tmp}/afile"], "data"),
    ("s3 serve", "--env-file"): (["s3", "serve", "--env-file", "{tmp}/nope/s3.env"], "does not exist"),
    **{
        ("eval pastis", option): (
            ["eval", "pastis", "--root", "{pastis}", "--task", "forecast", option, value],
            words,
        )
        for option, value, words in [
            ("--root", "{tmp}/none", "expected the PASTIS layout"),
            ("--task", "segment", "invalid choice"),
            ("--train-folds", "1,x", "--train-folds"),
            ("--test-folds", "9", "--test-folds"),
            ("--max-pixels", "0", "--max-pixels"),
            ("--max-patches", "0", "--max-patches"),
            ("--steps", "500", "--steps 500"),
            ("--checkpoint", "{tmp}/none", "none"),
            ("--epochs", "-1", "--epochs"),
            ("--batch-size", "0", "--batch-size"),
            ("--lr", "0", "--lr"),
            ("--device", "tpu", "invalid choice"),
            ("--out", "{tmp}", "is a folder"),
        ]
    },
    **{
        ("eval eurosat", option): (["eval", "eurosat", "--root", "{eurosat}", option, *value.split()], words)
        for option, value, words in [
            ("--root", "{tmp}/none", "expected the EuroSAT multispectral"),
            ("--split-files", "{tmp}/none.txt {tmp}/none2.txt", "none.txt"),
            ("--test-fraction", "1.5", "--test-fraction"),
            ("--max-per-class", "0", "--max-per-class"),
            ("--checkpoint", "{tmp}/none", "none"),
            ("--epochs", "-1", "--epochs"),
            ("--batch-size", "0", "--batch-size"),
            ("--lr", "-1", "--lr"),
            ("--device", "tpu", "invalid choice"),
            ("--out", "{tmp}", "is a folder"),
        ]
    },
}


@pytest.mark.parametrize("case", sorted(PIMC_CASES), ids=lambda c: f"{c[0]} {c[1]}")
def test_a_bad_pimc_command_is_exit_2_and_one_error_line(tmp_path, capsys, case):
    argv_template, words = PIMC_CASES[case]
    (tmp_path / "afile").write_text("x")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "region: {bbox: [11.9, 45.4, 12.0, 45.5]}\nperiod: 2022\ncatalog: {stac_url: 'http://127.0.0.1:9'}\n"
        f"output: {tmp_path}/out\n"
    )
    places = {"tmp": tmp_path, "spec": spec, "pastis": tmp_path / "pastis", "eurosat": tmp_path / "eurosat"}
    if case[0] == "eval pastis":
        write_pastis(places["pastis"])
    if case[0] == "eval eurosat":
        write_eurosat(places["eurosat"], per_class=2)
    argv = [a.format(**places) for a in argv_template]
    with contextlib.suppress(KeyboardInterrupt):
        code = run(argv)
    assert code == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and "error" in err[-1] and words in err[-1], err[-3:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "report.json").exists()
