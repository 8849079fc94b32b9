"""``pimc s3 serve``: its secret never reaches the output (which may be a log), and a bad --env-file is refused
before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

BIN = Path(sys.executable).parent


def serve(*args: str, cwd: Path) -> tuple[str, int]:
    """Run ``pimc s3 serve`` until it says where it is (or exits); stop it; returns its stdout and exit code."""
    proc = subprocess.Popen(
        [str(BIN / "pimc"), "s3", "serve", "--data-dir", str(cwd / "data"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        start_new_session=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "to use it" in line:
            # the variables follow the line that says where it is
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGTERM)
            lines += proc.stdout.readlines()
            break
    code = proc.wait(timeout=60)
    return "".join(lines), code


def test_the_secret_goes_to_the_env_file_only(tmp_path):
    env_file = tmp_path / "s3.env"
    out, _ = serve("--bucket", "serve-test", "--env-file", str(env_file), cwd=tmp_path)
    secret = next(line for line in env_file.read_text().splitlines() if "AWS_SECRET_ACCESS_KEY=" in line)
    assert secret.split("=", 1)[1] and secret.split("=", 1)[1] not in out
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"

    out, _ = serve(
        "--bucket", "serve-test", cwd=tmp_path
    )  # no env file: the key id is shown, the secret is not
    assert "AWS_ACCESS_KEY_ID=" in out and "AWS_ENDPOINT_URL=" in out
    assert "AWS_SECRET_ACCESS_KEY" not in out and "--env-file" in out


def test_an_env_file_in_a_missing_folder_is_refused_before_the_server_starts(tmp_path):
    proc = subprocess.run(
        [str(BIN / "pimc"), "s3", "serve", "--env-file", str(tmp_path / "nope" / "s3.env")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "does not exist" in lines[0], proc.stderr


def test_stac_serve_on_a_port_in_use_is_refused(sample_archive):
    """It used to report success while the server already on that port answered."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        proc = subprocess.run(
            [str(BIN / "pimc"), "stac", "serve", "--archive", str(sample_archive.root), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in lines[0]


def test_an_invalid_bucket_name_is_refused_before_the_server_starts():
    """SeaweedFS started with such a bucket and never served it: a 60 s wait, then an error about the wait."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "pimc"), "s3", "serve", "--bucket", "b"], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "bucket name 'b' is not valid" in lines[0], (
        proc.stderr
    )
    assert time.monotonic() - t0 < 30


def test_a_port_taken_between_picking_and_binding_is_retried_on_fresh_ports():
    """Ports are picked free, but another process (a test beside this one) can take one before SeaweedFS binds it.
    SeaweedFS then logs "Port allocation failed" and exits, while the probe hung on the other process's socket
    for the whole 60 s wait, and the error pointed at a log it had just deleted."""
    from pimc_ray.local.s3_server import LocalS3Server

    server = LocalS3Server(("pimc-test",))
    taken = server.ports["s3"]
    with socket.socket() as squatter:  # listens and never answers
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        t0 = time.monotonic()
        with server:
            assert server.ports["s3"] != taken
            s3 = boto3.client("s3", endpoint_url=server.endpoint, **_credentials(server))
            s3.put_object(Bucket="pimc-test", Key="k", Body=b"x")
            assert s3.get_object(Bucket="pimc-test", Key="k")["Body"].read() == b"x"
        assert time.monotonic() - t0 < 45


def _credentials(server) -> dict[str, str]:
    env = server.env()
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }
