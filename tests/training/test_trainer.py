"""Pretraining on Ray Train: schedule, storage, and a run that stops and resumes from its checkpoint's step."""

import contextlib
import dataclasses
import datetime as dt
import glob
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import shapely.geometry
import torch

from pimc_ray.data.series import SeriesSpec
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid
from pimc_ray.errors import CheckpointError, CheckpointMismatchError, InvalidConfigError
from pimc_ray.local.archive import tile_info
from pimc_ray.models import EncoderConfig, PIMCConfig, load_checkpoint, load_training_checkpoint
from pimc_ray.training.checkpoints import checkpoint_step, checkpoints, resume_step, storage_filesystem
from pimc_ray.training.config import RunSpec, TrainConfig
from pimc_ray.training.export import export_encoder
from pimc_ray.training.loop import shift_series
from pimc_ray.training.pairs import PairSpec, PairStream, training_tasks
from pimc_ray.training.trainer import pretrain, visits_needed
from tests.listeners import is_loopback, watch_listeners
from tests.specs import TEST_SPEC

SERIES = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
TINY = PIMCConfig(
    rp=EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16}),
    rsi=EncoderConfig(
        name="rsi-cnn", params={"in_channels": 10, "patch_size": 3, "widths": [8], "embed_dim": 16}
    ),
    projection={"name": "mlp", "params": {"out_dim": 8, "hidden": 16}},
)


def test_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=100, warmup_steps=10, lr=1e-3)
    assert config.lr_at(0) == pytest.approx(1e-4) and config.lr_at(9) == pytest.approx(1e-3)
    assert config.lr_at(10) == pytest.approx(1e-3) and config.lr_at(55) == pytest.approx(5e-4)
    assert config.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


def test_time_shift_moves_each_series_and_repeats_its_edge_values():
    series = np.arange(2 * 2 * 6, dtype=np.float32).reshape(2, 2, 6) * 10  # two samples, two bands, T = 6
    rng = np.random.default_rng(3)
    expected_shifts = np.random.default_rng(3).integers(-2, 3, size=2)
    out = shift_series(series, 2, rng)
    for i, s in enumerate(expected_shifts):
        # by hand: step t takes step t - s, clipped to the series
        source = [min(max(t - s, 0), 5) for t in range(6)]
        np.testing.assert_array_equal(out[i], series[i][:, source])
    assert shift_series(series, 0, rng) is series
    shifts_seen = {
        int(np.argmax(row[0] == series[0, 0, 2]) - 2)
        for row in shift_series(np.repeat(series[:1], 400, 0), 2, rng)
    }
    assert shifts_seen == {-2, -1, 0, 1, 2}  # every shift in range, none outside
    with pytest.raises(ValueError, match="time_shift"):
        TrainConfig(time_shift=-1)


def test_storage_is_a_local_folder_or_s3(tmp_path):
    path, fs = storage_filesystem(str(tmp_path / "runs"))
    assert path == str((tmp_path / "runs").resolve()) and fs is None
    path, fs = storage_filesystem("s3://bucket/prefix", endpoint="http://127.0.0.1:8333")
    assert path == "bucket/prefix" and type(fs).__name__ == "S3FileSystem"
    with pytest.raises(ValueError, match="s3://"):
        storage_filesystem("gs://bucket")
    assert (
        checkpoint_step("step_00000120") == 120
        and checkpoint_step("checkpoint_manager_snapshot.json") is None
    )


def test_s3_storage_signs_multipart_uploads_with_the_environment_keys(s3, monkeypatch):
    """pyarrow sends checkpoint parts as aws-chunked UploadPart requests: SeaweedFS must know the key pair."""
    from pyarrow import fs

    path, filesystem = storage_filesystem(f"s3://pimc-test/fs-{uuid.uuid4().hex[:8]}/")
    data = os.urandom(6 << 20)  # over pyarrow's 5 MiB part size: two parts
    with filesystem.open_output_stream(f"{path}/blob.bin") as out:
        out.write(data)
    with filesystem.open_input_stream(f"{path}/blob.bin") as src:
        assert src.read() == data
    assert filesystem.get_file_info(fs.FileSelector(path))[0].size == len(data)

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    _, wrong = storage_filesystem(f"s3://{path}")
    with pytest.raises(OSError, match="SIGNATURE|ACCESS_DENIED|AccessDenied"):
        with wrong.open_output_stream(f"{path}/refused.bin") as out:
            out.write(b"x")
    secret = s3.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in (s3.data_dir / "weed.log").read_text(errors="replace")
    assert secret not in repr(s3)


def test_visits_skip_what_earlier_steps_consumed():
    stream = PairStream([], [], PairSpec(SERIES, pixels_per_window=64))
    config = TrainConfig(steps=10, batch_size=32)
    assert visits_needed(config, stream, 0) == (0, 9)  # ceil(1.25 x 10 x 32 pairs / 64 per visit) + 2
    assert visits_needed(config, stream, 6)[0] == 3


def tiny_stream(archive) -> PairStream:
    tile = tile_info(TEST_SPEC, "32TQR")
    grid = OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))
    spec = PairSpec(SERIES, patch_size=3, window_size=32, pixels_per_window=48)
    return PairStream(archive.read_items("sentinel-2-l2a"), training_tasks([grid], 32), spec, reader_cpus=1)


def adam_steps(folder) -> set[int]:
    """The step counters AdamW keeps per parameter: how many optimizer steps the weights have seen."""
    state = load_training_checkpoint(folder).optimizer_state["state"]
    return {int(s["step"]) for s in state.values()}


def test_worker_cpus_fit_what_the_readers_leave_of_the_cluster():
    run = RunSpec(name="r", storage_path="/tmp/runs")  # 2 workers, 1 reader x 1 CPU; worker CPUs: fit
    assert run.fitted(2.0).cpus_per_worker == 0.5 and run.fitted(2.0).cpus == 2.0
    assert run.fitted(16.0).cpus_per_worker == 1.0  # at most one each
    assert run.fitted(1.0).cpus_per_worker == 0.1  # the floor: the check then refuses 1.2 CPUs on 1
    assert RunSpec(name="r", storage_path="/tmp/runs", cpus_per_worker=1.0).fitted(2.0).cpus == 3.0


@pytest.mark.slow
def test_a_run_the_cluster_cannot_hold_is_refused_before_it_starts(local_ray, sample_archive, tmp_path):
    run = RunSpec(name="big", storage_path=str(tmp_path / "runs"), workers=2, cpus_per_worker=1.0)
    config = TrainConfig(model=TINY, steps=2, batch_size=16)
    with pytest.raises(InvalidConfigError, match="needs 3 CPU but the Ray cluster has 2 CPU in all"):
        pretrain(tiny_stream(sample_archive), config, run)  # 2 workers x 1 + 1 reader x 1 on 2 CPUs
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_stopped_run_resumes_from_its_checkpoint_step(local_ray, sample_archive, tmp_path):
    stream = tiny_stream(sample_archive)
    run = RunSpec(name="resume", storage_path=str(tmp_path / "runs"), workers=2, cpus_per_worker=0.5)
    first = TrainConfig(
        model=TINY, steps=4, batch_size=16, checkpoint_every=2, warmup_steps=1, shuffle_buffer=64
    )
    with watch_listeners("RayTrainWorker") as listening:
        result = pretrain(stream, first, run, export_to=tmp_path / "encoder-4")
    # DDP's rendezvous store listened on every interface (*:PORT) while the rest of a local run keeps to loopback
    assert listening and all(is_loopback(a) for a in listening), listening
    assert result.step == 4 and result.metrics["step"] == 4 and np.isfinite(result.metrics["loss"])
    assert [s for s, _ in checkpoints(run)] == [4, 2]
    assert adam_steps(result.checkpoint) == {4}

    # the job is resubmitted with more steps: it continues from step 4, not from scratch
    more = dataclasses.replace(first, steps=6)
    again = pretrain(stream, more, run, export_to=tmp_path / "encoder-6")
    assert again.step == 6
    state = load_training_checkpoint(again.checkpoint)
    assert state.step == 6 and state.meta["started_at"] == 4
    assert adam_steps(again.checkpoint) == {6}  # 4 restored + 2 new optimizer steps
    assert [s for s, _ in checkpoints(run)] == [6, 4, 2]

    # the export holds the RP encoder at that step (its rp/ folder), loadable by the mapping job
    encoder, meta = load_checkpoint(tmp_path / "encoder-6" / "rp", expect=TINY.rp)
    assert meta["trained"]["step"] == 6 and meta["kind"] == "pimc-encoder"
    with torch.no_grad():
        x = torch.rand(2, 3, 36, 36)
        assert torch.equal(encoder(x), state.model.rp.eval()(x))

    # a finished run resubmitted does nothing but export again
    done = pretrain(stream, more, run)
    assert done.step == 6 and done.checkpoint.endswith("step_00000006")

    # another model under the same run name is refused before any worker starts
    other = dataclasses.replace(
        more, model=dataclasses.replace(TINY, projection={"name": "mlp", "params": {"out_dim": 4}})
    )
    with pytest.raises(CheckpointMismatchError, match="resume with the same model"):
        pretrain(stream, dataclasses.replace(other, steps=8), run)

    # a checkpoint left incomplete (a job killed while it was copied) is skipped: Ray never registered it
    latest = Path(again.checkpoint)
    data = bytearray((latest / "optimizer.safetensors").read_bytes())
    (latest / "optimizer.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    messages = []
    assert resume_step(run, TINY, messages.append) == (str(tmp_path / "runs" / "resume" / "step_00000004"), 4)
    assert "optimizer.safetensors" in messages[0] and "corrupt" in messages[0]


def leftover_copies(run_name: str, keep: Path) -> list[str]:
    """Folders in the temporary directory, outside ``keep``, still holding a checkpoint of ``run_name``."""
    tmp = tempfile.gettempdir()
    found = []
    for pattern in ("*/config.json", "*/*/config.json", "*/*/*/config.json"):
        for config in glob.glob(os.path.join(tmp, pattern)):
            if Path(config).resolve().is_relative_to(keep.resolve()):
                continue
            with contextlib.suppress(OSError):
                if f'"run": "{run_name}"' in Path(config).read_text(errors="replace"):
                    found.append(os.path.dirname(config))
    return found


@pytest.mark.slow
def test_checkpoints_in_s3_resume_and_export(local_ray, s3, sample_archive, tmp_path):
    import boto3

    stream = tiny_stream(sample_archive)
    prefix = f"runs-{uuid.uuid4().hex[:8]}"
    name = f"s3-{prefix}"
    # max_failures=1: once in three full-suite runs a Ray Train worker process died mid-run here (exit "connection
    # error code 2", cause not yet found, see docs/pretraining.md); Ray Train then restarts the workers from the
    # newest checkpoint, which is the behaviour a real run relies on. The resume assertions below still hold.
    run = RunSpec(
        name=name, storage_path=f"s3://pimc-test/{prefix}", workers=2, cpus_per_worker=0.5, max_failures=1
    )
    first = TrainConfig(
        model=TINY, steps=2, batch_size=16, checkpoint_every=2, warmup_steps=1, shuffle_buffer=64
    )
    result = pretrain(stream, first, run)
    assert result.step == 2 and result.checkpoint == f"pimc-test/{prefix}/{name}/step_00000002"
    client = boto3.client("s3")  # endpoint and keys from the environment, as the job's
    listed = client.list_objects_v2(Bucket="pimc-test", Prefix=f"{prefix}/{name}/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    files = ("config.json", "model.safetensors", "pimc.safetensors", "optimizer.safetensors")
    assert {f"{prefix}/{name}/step_00000002/{f}" for f in files} <= keys
    assert [s for s, _ in checkpoints(run)] == [2]

    # resubmitted with more steps, it continues from the step in the bucket, and exports to the bucket too
    export = f"s3://pimc-test/{prefix}/encoder"
    again = pretrain(stream, dataclasses.replace(first, steps=4), run, export_to=export)
    assert again.step == 4 and [s for s, _ in checkpoints(run)] == [4, 2] and again.exported == export
    local = tmp_path / "step_4"
    local.mkdir()
    for f in files:
        client.download_file("pimc-test", f"{prefix}/{name}/step_00000004/{f}", str(local / f))
    state = load_training_checkpoint(local)
    assert state.step == 4 and state.meta["started_at"] == 2 and adam_steps(local) == {4}
    encoder, meta = load_checkpoint(f"{export}/rp", expect=TINY.rp)
    assert meta["trained"]["step"] == 4 and meta["trained"]["from"] == again.checkpoint
    with torch.no_grad():
        x = torch.rand(2, 3, 36, 36)
        assert torch.equal(encoder(x), state.model.rp.eval()(x))
    exported = client.list_objects_v2(Bucket="pimc-test", Prefix=f"{prefix}/encoder/")["Contents"]
    assert {o["Key"].removeprefix(f"{prefix}/encoder/") for o in exported} == {
        f"{branch}{f}"
        for branch in ("", "rp/", "rsi/", "joint/")
        for f in ("config.json", "model.safetensors")
    }
    # no copy of a checkpoint is left in the temporary directory (written by rank 0, read back for resuming)
    assert leftover_copies(name, keep=tmp_path) == []


def test_export_refuses_what_is_not_a_training_checkpoint(tmp_path):
    from pimc_ray.models import save_checkpoint

    folder = Path(save_checkpoint(tmp_path / "enc", TINY.rp.build(), TINY.rp))
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        export_encoder(str(folder), tmp_path / "out")
    assert json.loads((folder / "config.json").read_text())["encoder"]["name"] == "rp-resnet"
    assert not os.path.exists(tmp_path / "out")


def test_export_writes_the_default_embedding_and_the_rp_rsi_and_joint_encoders_beside_it(tmp_path):
    from pimc_ray.data.catalogs import BANDS
    from pimc_ray.models import save_training_checkpoint
    from pimc_ray.models.checkpoint import read_encoder_config

    model = TINY.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(4, 3, 36, 36), torch.rand(4, 10, 3, 3)).backward()  # moments, and batch-norm statistics
    optimizer.step()
    pairs = PairSpec(SERIES, patch_size=3, composite="2022-07-15")
    ckpt = save_training_checkpoint(
        tmp_path / "step_00000003", model, optimizer, step=3, extra={"pairs": pairs.to_dict(), "loss": 1.5}
    )
    out = tmp_path / "encoder"
    for _ in range(2):  # a finished run resubmitted exports again over its own export
        assert export_encoder(str(ckpt), out) == str(out)
        assert sorted(p.name for p in out.iterdir()) == [
            "config.json",
            "joint",
            "model.safetensors",
            "rp",
            "rsi",
        ]

    # the folder itself is the default embedding: the index series beside the RP and RSI encoders; out/rp the RP
    # encoder alone
    default_config = read_encoder_config(out)
    assert default_config.name == "pimc-concat" and default_config.inputs == "series+plots+patches"
    default, default_meta = load_checkpoint(out, expect=default_config)
    assert default_meta["branch"] == "default" and default.embed_dim == 3 * 36 + 16 + 16
    rp, meta = load_checkpoint(out / "rp", expect=TINY.rp)
    assert meta["kind"] == "pimc-encoder" and meta["branch"] == "rp" and "patches" not in meta
    assert read_encoder_config(out / "rp").inputs == "plots"
    # out/rsi is an encoder checkpoint of the image-patch encoder, which the mapping job maps with a halo
    rsi_config = read_encoder_config(out / "rsi")
    assert rsi_config == TINY.rsi and rsi_config.inputs == "patches" and rsi_config.halo == 1
    rsi, rsi_meta = load_checkpoint(out / "rsi", expect=TINY.rsi)
    assert rsi_meta["kind"] == "pimc-encoder" and rsi_meta["branch"] == "rsi"
    assert rsi_meta["trained"]["step"] == 3 and rsi_meta["trained"]["from"] == str(ckpt)
    assert rsi_meta["patches"] == {"bands": list(BANDS), "composite": "2022-07-15", "patch_size": 3}
    # out/joint holds both: its embedding is the RP embedding followed by the image-patch embedding
    joint_config = read_encoder_config(out / "joint")
    assert (
        joint_config.name == "pimc-joint"
        and joint_config.inputs == "plots+patches"
        and joint_config.halo == 1
    )
    joint, joint_meta = load_checkpoint(out / "joint", expect=joint_config)
    assert joint_meta["branch"] == "joint" and joint_meta["patches"] == rsi_meta["patches"]
    assert default_meta["patches"] == rsi_meta["patches"]
    assert joint.embed_dim == rp.embed_dim + rsi.embed_dim == 32
    with torch.no_grad():
        plots, patches = torch.rand(2, 3, 36, 36), torch.rand(2, 10, 3, 3)
        assert torch.equal(rp(plots), model.rp.eval()(plots))
        assert torch.equal(rsi(patches), model.rsi.eval()(patches))
        assert torch.equal(joint(plots, patches), torch.cat([rp(plots), rsi(patches)], dim=1))
        series = torch.rand(2, 3, 36)
        expected = torch.cat([series.flatten(1), rp(plots), rsi(patches)], dim=1)
        assert torch.equal(default(series, plots, patches), expected)
