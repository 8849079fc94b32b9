"""A small Dockerfile reader and the checks ``infra/docker/Dockerfile.*`` must pass (no Docker daemon needed).

:func:`parse_dockerfile` joins continuation lines as Docker does and drops comments; :func:`dockerfile_problems`
checks one image against the repository: its base, that every COPY source exists and is in the build context
(not excluded by ``.dockerignore``), that the project is installed from its own files with extras that exist,
that torch comes from the PyTorch index of the image's flavour at pyproject's pin, the non-root user, the venv
on PATH, the working directory holding ``jobs/``, and no secrets. Each check returns one line per problem.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "infra" / "docker"
Flavour = Literal["cpu", "cuda"]

#: Where PyTorch publishes the wheels of each local version label (``+cpu``, ``+cu126``...).
TORCH_INDEX = "https://download.pytorch.org/whl/{label}"
#: Files and folders ``pip install .`` needs besides the readme named in pyproject.toml, and what the jobs need.
PROJECT_FILES = ("pyproject.toml", "pimc_ray", "jobs", "infra/specs")
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|PRIVATE|CREDENTIAL|^AWS_", re.IGNORECASE)
_SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its first line number, keyword (upper case) and argument text."""

    line: int
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of CMD/ENTRYPOINT/RUN, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        return [str(v) for v in value]

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """``--flag=value`` options before the arguments (COPY --from=..., RUN --mount=...) and the rest."""
        words = shlex.split(self.args)
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile (parser directives and comments dropped, continuations joined)."""
    out: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # comments (also inside a continuation, as Docker reads them) and blank lines
        if not buffer:
            start = number
        if raw.rstrip().endswith("\\"):
            buffer += raw.rstrip()[:-1]
            continue
        buffer += raw
        keyword, _, args = buffer.strip().partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = ""
    if buffer:
        raise ValueError(f"line {start}: a continuation runs past the end of the file")
    return out


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a RUN's shell form, split at ``&&``, ``||``, ``;`` and pipes (quotes respected)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    redirect = False
    for token in lexer:
        if token in _SEPARATORS:
            commands.append([])
        elif set(token) <= set("<>&") and ("<" in token or ">" in token):
            redirect = True  # the next word is the redirection's target
        elif redirect:
            redirect = False
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


# --- the project's own facts ----------------------------------------------------------------------------------


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pins() -> dict[str, Version]:
    """Exact pins (``name==version``) of pyproject's dependencies and extras, by normalised name."""
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    out = {}
    for text in requirements:
        req = Requirement(text)
        exact = [s for s in req.specifier if s.operator == "=="]
        if exact:
            out[_normal(req.name)] = Version(exact[0].version)
    return out


def python_minor() -> str:
    """The one Python minor version pyproject allows (``>=3.11,<3.12`` -> ``3.11``)."""
    match = re.fullmatch(
        r">=(\d+\.\d+),<\d+\.\d+", pyproject()["project"]["requires-python"].replace(" ", "")
    )
    assert match, "requires-python is not a single minor version"
    return match.group(1)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dockerignore_patterns() -> list[str]:
    path = REPO / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(relative: str, patterns: list[str] | None = None) -> str | None:
    """The ``.dockerignore`` pattern that keeps ``relative`` (or a folder above it) out of the build context."""
    patterns = dockerignore_patterns() if patterns is None else patterns
    parts = Path(relative).parts
    for pattern in patterns:
        if pattern.startswith("!"):
            raise ValueError(f".dockerignore exception {pattern!r}: not supported by this reader")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            return pattern
    return None


# --- the checks -----------------------------------------------------------------------------------------------


def dockerfile_problems(text: str, flavour: Flavour) -> list[str]:
    """Everything wrong with one image's Dockerfile, one line each (empty: sound)."""
    try:
        steps = parse_dockerfile(text)
    except ValueError as err:
        return [str(err)]
    problems = _base_problems(steps, flavour)
    problems += _copy_problems(steps)
    problems += _install_problems(steps, flavour)
    problems += _runtime_problems(steps)
    return problems


def _base_problems(steps: list[Instruction], flavour: Flavour) -> list[str]:
    bases = [s for s in steps if s.keyword == "FROM"]
    if len(bases) != 1:
        return [f"expected one FROM (a single-stage image), found {len(bases)}"]
    image = bases[0].args.split()[0]
    minor = python_minor()
    if flavour == "cpu":
        if not re.fullmatch(rf"python:{re.escape(minor)}-slim(-\w+)?", image):
            return [f"line {bases[0].line}: the CPU image's base is {image}, not python:{minor}-slim"]
        return []
    if not re.fullmatch(r"nvidia/cuda:12\.\d+(\.\d+)?-runtime-[a-z0-9.]+", image):
        return [
            f"line {bases[0].line}: the CUDA image's base is {image}, not an nvidia/cuda:12.x runtime image"
        ]
    runs = " ".join(s.args for s in steps if s.keyword == "RUN")
    if f"python{minor}" not in runs:
        return [f"the CUDA image never installs or calls python{minor}"]
    return []


def _copy_problems(steps: list[Instruction]) -> list[str]:
    problems, copied = [], set()
    for step in steps:
        if step.keyword not in ("COPY", "ADD"):
            continue
        flags, words = step.flags_and_words()
        if "from" in flags:
            continue
        if step.keyword == "ADD":
            problems.append(f"line {step.line}: ADD; use COPY for files of the repository")
        for source in words[:-1]:
            relative = source.rstrip("/").removeprefix("./") or "."
            if not (REPO / relative).exists():
                problems.append(f"line {step.line}: COPY source {source} does not exist in the repository")
            elif (pattern := ignored(relative)) is not None:
                problems.append(
                    f"line {step.line}: COPY source {source} is excluded by .dockerignore ({pattern})"
                )
            copied.add(relative)
    readme = pyproject()["project"].get("readme")
    needed = [*PROJECT_FILES, *([readme] if isinstance(readme, str) else [])]
    problems += [f"nothing copies {path}, which the install needs" for path in needed if path not in copied]
    return problems


def _pip_installs(steps: list[Instruction]) -> list[tuple[int, list[str]]]:
    out = []
    for step in steps:
        if step.keyword != "RUN":
            continue
        for command in shell_commands(step.args):
            words = command[2:] if command[:2] == ["python", "-m"] else command
            if words[:2] in (["pip", "install"], ["pip3", "install"]):
                out.append((step.line, words[2:]))
    return out


def _install_problems(steps: list[Instruction], flavour: Flavour) -> list[str]:
    problems = []
    extras_known = set(pyproject()["project"]["optional-dependencies"])
    pinned = pins()
    project_installs, torch_installs = [], []
    for line, args in _pip_installs(steps):
        options = {
            a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in args if a.startswith("-")
        }
        index_url = options.get("--index-url") or _option_value(args, "--index-url")
        for word in (a for a in args if not a.startswith("-") and a != index_url):
            if word == "." or word.startswith(".["):
                extras = set(re.findall(r"[\w-]+", word[2:-1])) if word.startswith(".[") else set()
                problems += [
                    f"line {line}: extra [{e}] is not in pyproject.toml" for e in extras - extras_known
                ]
                project_installs.append((line, extras))
                continue
            req = Requirement(word)
            exact = [s.version for s in req.specifier if s.operator == "=="]
            if _normal(req.name) == "torch":
                torch_installs.append((line, exact, index_url, "--no-deps" in options))
            if (
                exact
                and _normal(req.name) in pinned
                and Version(exact[0]).public != str(pinned[_normal(req.name)])
            ):
                problems.append(
                    f"line {line}: {word} does not match pyproject's pin {req.name}=={pinned[_normal(req.name)]}"
                )
    if len(project_installs) != 1:
        problems.append(f"expected one `pip install .[...]` of the project, found {len(project_installs)}")
    elif flavour == "cuda" and "gpu" not in project_installs[0][1]:
        problems.append(f"line {project_installs[0][0]}: the CUDA image must install the project with [gpu]")
    elif flavour == "cpu" and "gpu" in project_installs[0][1]:
        problems.append(f"line {project_installs[0][0]}: the CPU image must not install the gpu extra")
    return problems + _torch_problems(torch_installs, flavour, steps)


def _option_value(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def _torch_problems(
    installs: list[tuple[int, list[str], str | None, bool]], flavour: Flavour, steps: list[Instruction]
) -> list[str]:
    if len(installs) != 1:
        return [f"expected one pip install of torch from PyTorch's index, found {len(installs)}"]
    line, exact, index_url, no_deps = installs[0]
    if not exact:
        return [f"line {line}: torch is not pinned (==)"]
    version = Version(exact[0])
    label = version.local or ""
    problems = []
    if flavour == "cpu" and label != "cpu":
        problems.append(f"line {line}: the CPU image installs torch {version}, not a +cpu build")
    if flavour == "cuda" and not re.fullmatch(r"cu12\d", label):
        problems.append(f"line {line}: the CUDA image installs torch {version}, not a +cu12x build")
    if index_url != TORCH_INDEX.format(label=label):
        problems.append(f"line {line}: torch {version} must come from {TORCH_INDEX.format(label=label)}")
    if not no_deps:
        problems.append(
            f"line {line}: install torch with --no-deps, so that nothing else comes from its index"
        )
    asserted = re.findall(r"torch\.__version__ == '([^']+)'", " ".join(s.args for s in steps))
    if asserted != [str(version)]:
        problems.append(f"the build does not assert torch.__version__ == '{version}' (found {asserted})")
    return problems


def _runtime_problems(steps: list[Instruction]) -> list[str]:
    problems = []
    env = {}
    for step in (s for s in steps if s.keyword in ("ENV", "ARG")):
        for name, _, _value in (w.partition("=") for w in shlex.split(step.args)):
            env[name] = _value
            if _SECRET_NAME.search(name):
                problems.append(
                    f"line {step.line}: {step.keyword} {name} looks like a credential; never bake one in"
                )
    venvs = [
        c[c.index("venv") + 1]
        for s in steps
        if s.keyword == "RUN"
        for c in shell_commands(s.args)
        if "venv" in c
    ]
    if len(venvs) != 1:
        problems.append(f"expected one `python -m venv DIR`, found {len(venvs)}")
    elif not env.get("PATH", "").startswith(f"{venvs[0]}/bin:"):
        problems.append(f"PATH does not start with the venv's {venvs[0]}/bin (pimc, ray and python on PATH)")
    for step in (s for s in steps if s.keyword == "RUN"):
        for command in shell_commands(step.args):
            if command[0].startswith("python") and "-c" in command[:-1]:
                code = command[command.index("-c") + 1]
                try:
                    compile(code, f"line {step.line}", "exec")
                except SyntaxError as err:
                    problems.append(f"line {step.line}: python -c is not valid Python: {err.msg}")
    users = [s for s in steps if s.keyword == "USER"]
    if not users:
        problems.append("no USER: the image would run as root")
    else:
        match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].args)
        if not match or int(match.group(1)) == 0:
            problems.append(
                f"line {users[-1].line}: USER {users[-1].args} must be a numeric non-root uid[:gid]"
            )
        elif not any(re.search(rf"useradd\b.*--uid {match.group(1)}\b", s.args) for s in steps):
            problems.append(f"line {users[-1].line}: no useradd creates uid {match.group(1)}")
    workdirs = [s.args for s in steps if s.keyword == "WORKDIR"]
    copies_jobs = any(
        s.keyword == "COPY"
        and s.flags_and_words()[1][:1] == ["jobs/"]
        and s.flags_and_words()[1][-1] == "jobs/"
        for s in steps
    )
    if not workdirs or not copies_jobs:
        problems.append("the working directory does not hold jobs/ (WORKDIR, then COPY jobs/ jobs/)")
    commands = [s for s in steps if s.keyword in ("CMD", "ENTRYPOINT")]
    if not commands or commands[-1].exec_form() is None:
        problems.append("CMD must be in exec form (a JSON list)")
    return problems


def image_commands(text: str) -> list[list[str]]:
    """The commands an image runs that come from the project's environment: CMD/ENTRYPOINT, and the `pimc` and
    `ray` calls of its RUN steps (the build's own smoke test)."""
    out = []
    for step in parse_dockerfile(text):
        if step.keyword in ("CMD", "ENTRYPOINT") and (form := step.exec_form()):
            out.append(form)
        elif step.keyword == "RUN":
            out += [c for c in shell_commands(step.args) if c[0] in ("pimc", "ray")]
    return out
