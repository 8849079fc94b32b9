"""The job runner's exit codes, and the commands that expose every job."""

import subprocess
import sys

import pytest

from pimc_ray.cli import JOBS, main
from pimc_ray.cli.run import run_job
from pimc_ray.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_TILES_FAILED,
    InternalError,
    InvalidAOIError,
    TilesFailedError,
)


def raising(err: BaseException):
    def work():
        raise err

    return work


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (InvalidAOIError("the AOI is empty; pass a bbox"), EXIT_BAD_INPUT),
        (TilesFailedError("1 of 4 tiles failed"), EXIT_TILES_FAILED),
        (InternalError("GDAL wrote an invalid COG for x.tif"), EXIT_INTERNAL),
    ],
)
def test_each_error_ends_the_job_with_its_code_and_one_line(err, code, capsys):
    assert run_job(raising(err)) == code
    assert capsys.readouterr().err == f"error: {err}\n"
    assert (EXIT_BAD_INPUT, EXIT_TILES_FAILED, EXIT_INTERNAL) == (2, 3, 4)  # the documented numbers


def test_success_is_zero_and_a_bug_keeps_its_traceback():
    assert run_job(lambda: None) == 0
    with pytest.raises(ZeroDivisionError):  # not turned into a code: Python exits 1 with the traceback
        run_job(lambda: 1 / 0)


@pytest.mark.parametrize("command", sorted(JOBS))
def test_every_job_is_a_pimc_command_whose_help_lists_the_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "4 internal error" in out and "2 bad input" in out


def test_pimc_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "pimc_ray.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in [*JOBS, "archive", "stac", "s3"]:
        assert command in proc.stdout
