"""Every temporary folder of the library lives in its process's scratch folder, and a process killed mid-run leaves
nothing there for long: the next process removes the folders of processes that no longer exist."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pimc_ray.scratch import SCRATCH, scratch_dir, temporary_folder

KILLED = """
import os, signal, sys
from pimc_ray.scratch import temporary_folder
with temporary_folder("pimc-indices-") as tmp:
    open(os.path.join(tmp, ".ndvi_epsg32632.abc.part.tif"), "wb").write(b"x" * 1000)
    print(tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # as `ray job stop` or the OOM killer would
"""


def test_a_killed_process_leaves_files_that_the_next_process_removes(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", KILLED], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.parent.parent == tmp_path / SCRATCH and any(left.iterdir())  # the kill left its partial file

    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    mine = scratch_dir()
    assert mine.parent == tmp_path / SCRATCH
    assert not left.parent.exists()  # the dead process's folder is gone
    with temporary_folder("pimc-copy-") as tmp:
        assert Path(tmp).parent == mine


def test_a_process_that_ends_normally_removes_its_own_folder(tmp_path):
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = "from pimc_ray.scratch import scratch_dir; (scratch_dir() / 'x').write_text('x')"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert (tmp_path / SCRATCH).is_dir() and not any((tmp_path / SCRATCH).iterdir())


def test_the_library_keeps_no_temporary_folder_outside_the_scratch_folder():
    """A ``tempfile.TemporaryDirectory`` or ``mkdtemp`` in /tmp is what a kill leaves for ever."""
    package = Path(__file__).parents[1] / "pimc_ray"
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent.name == "local":  # the local services' data folders, removed when they stop
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if (
                "TemporaryDirectory(" in line or "mkdtemp(" in line or "mkstemp(" in line
            ) and "dir=" not in line:
                offenders.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert offenders == [], offenders
