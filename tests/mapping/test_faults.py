"""Faults in the middle of a mapping run: the S3 store restarted, the driver killed with SIGKILL. Each run must end
with maps equal, pixel for pixel, to a run without the fault (the same job, items and random encoder seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import boto3
import numpy as np
import pytest
import rasterio

from pimc_ray.local.s3_server import LocalS3Server
from pimc_ray.storage import gdal_s3_env
from tests.mapping.test_map_jobs import JOBS, job_args

BUCKET = "pimc-faults"
PRODUCTS = ("embedding", "qa")


def start_job(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(JOBS / "embed_aoi.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,
    )


def wait_for(condition, proc: subprocess.Popen[str], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the job ended (code {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)


def tile_arrays(read_json, gdal_path) -> dict[tuple[str, str], np.ndarray]:
    """Every done tile's products as arrays, through the tiles' STAC items."""
    manifest = read_json("manifest.json")
    out = {}
    for tile, entry in manifest["tiles"].items():
        assert entry["status"] == "done", (tile, entry)
        item = read_json(f"tiles/{tile}/item.json")
        for product in PRODUCTS:
            href = item["assets"][product]["href"].removeprefix("./")
            with rasterio.open(gdal_path(f"tiles/{tile}/{href}")) as src:
                out[tile, product] = src.read()
    return out


def bucket_client(env: dict[str, str]):
    """boto3 on the local store whose variables are ``env``."""
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def published(client) -> int:
    """Status objects of the run in the bucket: its tiles published so far."""
    return len(client.list_objects_v2(Bucket=BUCKET, Prefix="run/status/").get("Contents", []))


def bucket_maps(client, env: dict[str, str], monkeypatch) -> dict[tuple[str, str], np.ndarray]:
    """The run's maps in the bucket, as :func:`tile_arrays` gives them."""

    def read_json(key: str):
        return json.loads(client.get_object(Bucket=BUCKET, Key=f"run/{key}")["Body"].read())

    for name, value in env.items():  # GDAL takes the credentials from the environment only
        monkeypatch.setenv(name, value)
    with rasterio.Env(**gdal_s3_env()):
        return tile_arrays(read_json, lambda key: f"/vsis3/{BUCKET}/run/{key}")


@pytest.fixture(scope="module")
def reference(stac_api, tmp_path_factory):
    """The run without faults, in a local folder: its arrays by (tile, product)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    proc = start_job(job_args(stac_api.url, out, **{"--workers": "0"}))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    arrays = tile_arrays(lambda key: json.loads((out / key).read_text()), lambda key: str(out / key))
    assert len({tile for tile, _ in arrays}) == 8
    return arrays


def assert_equal_maps(arrays, reference) -> None:
    assert arrays.keys() == reference.keys()
    for key, expected in reference.items():
        np.testing.assert_array_equal(arrays[key], expected, err_msg=str(key))


@pytest.mark.slow
def test_a_driver_killed_mid_run_then_rerun_gives_the_maps_of_a_run_without_the_kill(
    stac_api, reference, tmp_path
):
    out = tmp_path / "out"
    args = job_args(stac_api.url, out, **{"--workers": "0"})
    proc = start_job(args)
    wait_for(lambda: len(list((out / "status").glob("*.json"))) >= 2, proc, "two tiles published")
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up of any kind: the process is gone
    proc.communicate()
    done_before = len(list((out / "status").glob("*.json")))
    assert 2 <= done_before < 8, done_before

    rerun = start_job(args)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert f"{done_before} skipped" in stdout, stdout[-1500:]
    arrays = tile_arrays(lambda key: json.loads((out / key).read_text()), lambda key: str(out / key))
    assert_equal_maps(arrays, reference)


@pytest.mark.slow
def test_an_s3_store_restarted_mid_run_is_retried_and_the_maps_equal_a_run_without_it(
    stac_api, reference, tmp_path, monkeypatch
):
    server = LocalS3Server((BUCKET,), data_dir=tmp_path / "s3").start()
    try:
        env = server.env()
        client = bucket_client(env)
        proc = start_job(job_args(stac_api.url, f"s3://{BUCKET}/run", **{"--workers": "0"}), env)
        wait_for(lambda: published(client) >= 1, proc, "a tile published")
        server.stop()  # the store goes away mid-run ...
        time.sleep(5)
        server.start()  # ... and comes back on the same port with the same data
        assert server.ports["s3"] == int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), "restarted elsewhere"
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]

        assert_equal_maps(bucket_maps(client, env, monkeypatch), reference)
    finally:
        server.stop()


@pytest.mark.slow
def test_an_s3_store_gone_for_good_ends_the_run_with_one_line_and_a_rerun_completes_it(
    stac_api, reference, tmp_path, monkeypatch
):
    """It was a traceback (exit 1), after every remaining tile had waited out the retries on its own."""
    server = LocalS3Server((BUCKET,), data_dir=tmp_path / "s3").start()
    try:
        env = server.env()
        client = bucket_client(env)
        args = job_args(stac_api.url, f"s3://{BUCKET}/run", **{"--workers": "0"})
        proc = start_job(args, env)
        wait_for(lambda: published(client) >= 1, proc, "a tile published")
        server.stop()
        stdout, stderr = proc.communicate(timeout=600)
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2, stderr[-3000:]
        assert len(lines) == 1 and "stopped answering" in lines[0] and "rerun the same command" in lines[0], (
            lines
        )
        assert "Traceback" not in stderr

        server.start()  # back, with the tiles published before
        rerun = start_job(args, env)
        stdout, stderr = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, stderr[-3000:]
        assert "skipped" in stdout

        assert_equal_maps(bucket_maps(client, env, monkeypatch), reference)
    finally:
        server.stop()
