"""The images of infra/docker/, read as text (no Docker daemon here): each is checked against the repository
(base, COPY sources in the build context, the project installed from its own files with extras that exist, torch
from the right PyTorch index at pyproject's pin, non-root user, venv on PATH, jobs/ in the working directory, no
secrets), the commands they run exist in the test environment, and the checks fail on broken Dockerfiles."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.dockerfiles import (
    DOCKER,
    REPO,
    Flavour,
    dockerfile_problems,
    dockerignore_patterns,
    ignored,
    image_commands,
    parse_dockerfile,
    pyproject,
    shell_commands,
)
from tests.infra.kube import load_manifests

BIN = Path(sys.executable).parent
FLAVOURS: tuple[Flavour, ...] = ("cpu", "cuda")


def dockerfile(flavour: Flavour) -> str:
    return (DOCKER / f"Dockerfile.{flavour}").read_text()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dockerfile_is_sound(flavour: Flavour) -> None:
    assert dockerfile_problems(dockerfile(flavour), flavour) == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_commands_the_image_runs_exist(flavour: Flavour) -> None:
    """CMD and the build's smoke test call `pimc` and `ray` from the venv: they exist and take those arguments."""
    commands = {tuple(c) for c in image_commands(dockerfile(flavour))}
    assert ("pimc", "--help") in commands
    for command in sorted(commands):
        done = subprocess.run(
            [str(BIN / command[0]), *command[1:]], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stderr[-2000:]}"


def test_cpu_images_build_check_holds_here() -> None:
    """The CPU build asserts a +cpu torch and no nvidia-* package: true of the test environment, which installs
    the same way, so the assertion is neither broken nor vacuous."""
    (code,) = [
        c[c.index("-c") + 1]
        for step in parse_dockerfile(dockerfile("cpu"))
        if step.keyword == "RUN"
        for c in shell_commands(step.args)
        if c[0] == "python" and "-c" in c
    ]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_both_images_install_the_same_project_and_user() -> None:
    """Ray needs one Python and one environment layout across a cluster: the same venv, files, user, workdir."""

    def shape(flavour: Flavour) -> list[str]:
        keep = ("COPY", "WORKDIR", "USER", "ENV", "CMD")
        return [f"{s.keyword} {s.args}" for s in parse_dockerfile(dockerfile(flavour)) if s.keyword in keep]

    assert shape("cpu") == shape("cuda")


def test_dockerignore_keeps_the_context_small_and_clean() -> None:
    for path in (
        ".venv",
        "data",
        "out",
        ".cache",
        ".git",
        "pimc_ray/__pycache__",
        "x.egg-info",
        ".cache/s3.env",
    ):
        assert ignored(path) is not None, f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "pimc_ray/runs/spec.py", "jobs/embed_aoi.py", "infra/specs"):
        assert ignored(path) is None, f"{path} is needed by the images"


def test_image_names_match_the_manifests_and_the_readme() -> None:
    """The manifests' images are the tags the README builds, from these Dockerfiles, at the project's version."""
    version = pyproject()["project"]["version"]
    images = {image for manifest in load_manifests() for image in images_in(manifest.doc)}
    ours = {i for i in images if i.startswith("ghcr.io/pimc-ray/")}
    assert ours == {f"ghcr.io/pimc-ray/pimc-ray:{version}-{f}" for f in FLAVOURS}
    assert {i.split(":")[0] for i in images - ours} == {"registry.k8s.io/kubectl"}
    readme = (REPO / "README.md").read_text()
    for flavour in FLAVOURS:
        build = f"docker build -f infra/docker/Dockerfile.{flavour} -t ghcr.io/pimc-ray/pimc-ray:{version}-{flavour} ."
        assert build in readme


def images_in(value: object) -> Iterator[str]:
    """Every ``image`` of a manifest, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image" and isinstance(item, str):
                yield item
            else:
                yield from images_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from images_in(item)


# --- the checks fail on broken Dockerfiles ---------------------------------------------------------------------


def broken(flavour: Flavour, old: str, new: str) -> list[str]:
    text = dockerfile(flavour)
    assert old in text, old
    return dockerfile_problems(text.replace(old, new, 1), flavour)


def test_a_missing_or_ignored_copy_source_is_rejected() -> None:
    problems = broken("cpu", "COPY jobs/ jobs/", "COPY job/ jobs/")
    assert any("COPY source job/ does not exist" in p for p in problems)
    assert "the working directory does not hold jobs/ (WORKDIR, then COPY jobs/ jobs/)" in problems
    assert any("nothing copies jobs" in p for p in problems)
    # docs/ is in every clone (data/ is not: it holds what `make demo` builds) and .dockerignore excludes it
    problems = broken("cpu", "COPY infra/specs/ infra/specs/", "COPY docs/ infra/specs/")
    assert any("COPY source docs/ is excluded by .dockerignore (docs)" in p for p in problems)


def test_an_unknown_extra_or_the_wrong_extra_is_rejected() -> None:
    assert any("extra [gpus] is not in pyproject.toml" in p for p in broken("cuda", '".[gpu]"', '".[gpus]"'))
    assert any("must install the project with [gpu]" in p for p in broken("cuda", '".[gpu]"', "."))
    assert any(
        "must not install the gpu extra" in p for p in broken("cpu", "pip install . ", "pip install .[gpu] ")
    )


def test_a_torch_pin_or_index_that_disagrees_is_rejected() -> None:
    problems = broken("cpu", "torch==2.13.0+cpu", "torch==2.14.1+cpu")
    assert any("does not match pyproject's pin torch==2.13.0" in p for p in problems)
    problems = broken(
        "cpu", "--index-url https://download.pytorch.org/whl/cpu", "--index-url https://pypi.org/simple"
    )
    assert any("must come from https://download.pytorch.org/whl/cpu" in p for p in problems)
    problems = broken("cuda", "torch==2.13.0+cu126", "torch==2.13.0+cu130")
    assert any("not a +cu12x build" in p for p in problems)
    assert any("install torch with --no-deps" in p for p in broken("cpu", "--no-deps ", ""))


def test_root_secrets_and_a_shell_cmd_are_rejected() -> None:
    assert any("must be a numeric non-root" in p for p in broken("cpu", "USER 1000:1000", "USER pimc"))
    assert any("must be a numeric non-root" in p for p in broken("cuda", "USER 1000:1000", "USER 0"))
    problems = broken("cpu", "PYTHONUNBUFFERED=1", "AWS_SECRET_ACCESS_KEY=abc")
    assert any("AWS_SECRET_ACCESS_KEY looks like a credential" in p for p in problems)
    assert "CMD must be in exec form (a JSON list)" in broken(
        "cpu", 'CMD ["pimc", "--help"]', "CMD pimc --help"
    )


def test_a_wrong_base_or_bad_python_is_rejected() -> None:
    assert any(
        "not python:3.11-slim" in p for p in broken("cpu", "FROM python:3.11-slim", "FROM python:3.12-slim")
    )
    assert any(
        "not an nvidia/cuda:12.x runtime" in p for p in broken("cuda", "12.6.3-runtime", "12.6.3-devel")
    )
    assert any(
        "python -c is not valid Python" in p
        for p in broken("cuda", "import cupy, torch;", "import cupy torch;")
    )


def test_dockerignore_reader() -> None:
    patterns = ["**/__pycache__", "*.egg-info", "data", "**/*.env"]
    assert ignored("a/b/__pycache__/x.pyc", patterns) == "**/__pycache__"
    assert ignored("pimc_ray.egg-info/PKG-INFO", patterns) == "*.egg-info"
    assert ignored("data/archive", patterns) == "data"
    assert ignored("infra/data", patterns) is None  # a bare name matches at the root only, as Docker's does
    assert ignored(".cache/s3.env", patterns) == "**/*.env"
    assert dockerignore_patterns(), "no .dockerignore at the repository root"
