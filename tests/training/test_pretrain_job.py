"""`ray job submit jobs/pretrain.py` on the local Ray head: two workers, checkpoints, stop, resubmit, resume."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from pimc_ray.local import tile_bbox
from pimc_ray.models import EncoderConfig, load_checkpoint, load_training_checkpoint
from tests.specs import TEST_SPEC

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "pretrain.py"
RAY = str(Path(sys.executable).parent / "ray")


def pretrain_args(stac_url: str, out: Path, steps: int) -> list[str]:
    """The job's arguments, its resources left at their defaults: 2 workers share what one pair reader leaves of
    the 2-CPU head (the README's command, which hung on such a cluster when workers took 1 CPU each)."""
    return [
        "--aoi", tile_bbox("32TQR", TEST_SPEC, (0.1, 0.1, 0.9, 0.9)),
        "--start", "2022-01-01", "--end", "2022-12-31", "--stac-url", stac_url, "--out", str(out),
        "--train-steps", str(steps), "--batch-size", "32", "--checkpoint-every", "4", "--log-every", "4",
        "--warmup-steps", "2", "--window-size", "32", "--pixels-per-window", "128", "--patch-size", "3",
        "--shuffle-buffer", "64",
    ]  # fmt: skip


def steps_in(run_dir: Path) -> list[int]:
    return sorted(
        int(p.name.removeprefix("step_")) for p in run_dir.glob("step_*") if (p / "config.json").exists()
    )


def ray_job(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAY, "job", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_stopped_pretraining_job_resumes_when_resubmitted(ray_head, stac_api, tmp_path):
    out = tmp_path / "models" / "pimc-test"
    run_dir = (
        tmp_path / "models" / "runs" / "pimc-test"
    )  # default storage: runs/ beside --out, run = out's name
    submitted = ray_job(
        "submit", "--address", ray_head, "--no-wait", "--submission-id", f"pretrain-{tmp_path.name}", "--",
        sys.executable, str(JOB), *pretrain_args(stac_api.url, out, steps=200),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = f"pretrain-{tmp_path.name}"
    client = JobSubmissionClient(ray_head)
    t0 = time.monotonic()
    while not steps_in(run_dir):
        status = client.get_job_status(job_id)
        assert status == JobStatus.RUNNING or status == JobStatus.PENDING, client.get_job_logs(job_id)[-3000:]
        assert time.monotonic() < t0 + 300, "no checkpoint within 300 s"
        time.sleep(1)
    stopped = ray_job("stop", "--address", ray_head, job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert client.get_job_status(job_id) == JobStatus.STOPPED
    logs = client.get_job_logs(job_id)
    assert "[pretrain] step 4/200" in logs and logs.count("[pretrain] step 4/200") == 1  # rank 0 prints, once
    time.sleep(2)
    reached = max(steps_in(run_dir))
    assert reached < 200 and not out.exists()  # stopped mid-run: nothing exported yet

    resumed = ray_job(
        "submit", "--address", ray_head, "--", sys.executable, str(JOB),
        *pretrain_args(stac_api.url, out, steps=reached + 8),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"at step {reached}" in resumed.stdout  # the workers restored the checkpoint
    final = run_dir / f"step_{reached + 8:08d}"
    state = load_training_checkpoint(final)
    assert state.step == reached + 8 and state.meta["started_at"] == reached
    assert {int(s["step"]) for s in state.optimizer_state["state"].values()} == {reached + 8}

    # the export is what `jobs/embed_aoi.py --checkpoint` loads: the default embedding, the index series beside
    # the default RP encoder and the RSI encoder; the RP encoder is also exported alone
    encoder, meta = load_checkpoint(out)
    assert meta["trained"]["step"] == reached + 8 and encoder.embed_dim == 3 * 36 + 64 + 64
    assert meta["encoder"]["params"]["parts"][1]["params"] == EncoderConfig().params
    assert json.loads((out / "config.json").read_text())["kind"] == "pimc-encoder"
    rp, _ = load_checkpoint(out / "rp", expect=EncoderConfig())
    assert rp.embed_dim == 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"--batch-size": "33"}, "error: --batch-size 33 must split evenly over 2 workers"),
        ({"--patch-size": "4"}, "error: patch_size must be odd"),
        ({"--composite": "midsummer"}, "error: composite must be 'median' or an ISO date"),
        ({"--start": "2019-01-01", "--end": "2019-03-01"}, "error: no 'sentinel-2-l2a' items"),
    ],
)
def test_bad_pretraining_input_exits_2_with_one_line_before_any_work(stac_api, tmp_path, override, message):
    args = pretrain_args(stac_api.url, tmp_path / "out", steps=4)
    for flag, value in override.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    proc = subprocess.run([sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
