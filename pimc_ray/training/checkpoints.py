"""Where a pretraining run keeps its checkpoints, and which one a resubmitted run continues from.

Checkpoints go to ``<storage_path>/<run name>/step_<step>`` (a local folder, or an ``s3://`` URI read and written
through pyarrow's filesystems, as Ray Train does). :func:`resume_step` picks the newest complete one, checked
before any worker starts.
"""

from __future__ import annotations

import os
from typing import Any

from pimc_ray.models.pimc import PIMCConfig
from pimc_ray.progress import Progress
from pimc_ray.scratch import temporary_folder
from pimc_ray.storage import normalize_uri
from pimc_ray.training.config import RunSpec

__all__ = ["CHECKPOINT_PREFIX", "checkpoint_step", "checkpoints", "resume_step", "storage_filesystem"]

#: Name of each checkpoint folder under ``<storage_path>/<run name>/``.
CHECKPOINT_PREFIX = "step_"


def storage_filesystem(uri: str, *, endpoint: str | None = None) -> tuple[str, Any]:
    """``(storage_path, pyarrow filesystem or None)`` for Ray's ``RunConfig`` from a folder or an S3 URI.

    A local path or ``file://`` URI becomes an absolute path (Ray needs that). ``s3://bucket/prefix`` is given an
    explicit ``pyarrow.fs.S3FileSystem``, and the path loses its scheme, as Ray expects then. Its credentials come from
    the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``; pyarrow's default
    chain when they are not set), its region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (``us-east-1``), and
    ``endpoint`` or ``AWS_ENDPOINT_URL`` points it at an S3-compatible store such as SeaweedFS or MinIO, with
    path-style requests (``http://host:port/bucket/key``) there, which is what those stores serve.
    """
    if uri.startswith("s3://"):
        from pyarrow import fs

        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        if not bucket:
            raise ValueError(f"storage {uri!r} names no bucket: use s3://bucket/prefix")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.rstrip("/").rpartition("://")
            kwargs = {
                "endpoint_override": host,
                "scheme": scheme or "https",
                "force_virtual_addressing": False,
            }
        env = os.environ
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            kwargs["access_key"] = env["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
            if env.get("AWS_SESSION_TOKEN"):
                kwargs["session_token"] = env["AWS_SESSION_TOKEN"]
        kwargs["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        return uri.removeprefix("s3://").rstrip("/"), fs.S3FileSystem(**kwargs)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"storage {uri!r}: use a local folder, file:// or an s3:// URI")
    return normalize_uri(uri), None


def checkpoint_step(name: str) -> int | None:
    """The step in a checkpoint folder name ``step_00000100``, None for other names."""
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if digits.isdigit() else None


def checkpoints(run: RunSpec) -> list[tuple[int, str]]:
    """``(step, path)`` of a run's checkpoints that have their ``config.json``, newest first."""
    from pyarrow import fs

    path, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    filesystem = filesystem or fs.LocalFileSystem()
    run_dir = f"{path}/{run.name}"
    try:
        infos = filesystem.get_file_info(fs.FileSelector(run_dir, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        step = checkpoint_step(info.base_name)
        if info.type == fs.FileType.Directory and step is not None:
            if filesystem.get_file_info(f"{info.path}/config.json").type == fs.FileType.File:
                found.append((step, info.path))
    return sorted(found, reverse=True)


def resume_step(run: RunSpec, model: PIMCConfig, progress: Progress) -> tuple[str, int] | None:
    """The checkpoint a resubmitted run continues from, checked before any worker starts.

    Each candidate, newest first, is loaded (hashes, model; from object storage through a temporary copy): one
    that holds another model is refused; an incomplete or corrupt one (a job killed while the checkpoint was being
    copied) is skipped with a message, and the next older one is taken.

    Raises:
        CheckpointMismatchError: the run's checkpoint holds another model than ``model``.
    """
    from pimc_ray.errors import CheckpointError, CheckpointMismatchError
    from pimc_ray.models.train_state import load_training_checkpoint

    _, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    for step, path in checkpoints(run):
        try:
            if filesystem is None:
                load_training_checkpoint(path, expect=model)
            else:
                from pyarrow import fs

                with temporary_folder("pimc-resume-") as tmp:
                    fs.copy_files(path, tmp, source_filesystem=filesystem)
                    load_training_checkpoint(tmp, expect=model)
        except CheckpointMismatchError:
            raise
        except CheckpointError as err:
            progress(f"[pretrain] skipping {path}: {err}")
            continue
        return path, step
    return None
