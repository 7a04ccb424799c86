"""The Dockerfile's contract, checked from its text: no container engine runs on CI machines."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.servers import ROOT, free_port, monitor_env, running_monitor

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


@dataclass
class Stage:
    """One FROM ... section of the Dockerfile, with its instructions in order."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with comments dropped and backslash continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    return lines


def parse_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ${ARG} substituted in FROM."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines((ROOT / "Dockerfile").read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip()
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], args)
            words = image.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching rule wins)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(parts[i], pattern)
            for i, p in enumerate(prefixes)
        ):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile()[1]


def test_multi_stage_on_slim_python_311_or_newer_pinned_by_digest(stages: list[Stage]) -> None:
    """A tag moves; a digest names one image (the digest's value cannot be checked offline)."""
    assert len(stages) >= 2, "build and runtime must be separate stages"
    for stage in stages:
        match = re.fullmatch(
            r"python:(\d+)\.(\d+)[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}", stage.base
        )
        assert match, f"{stage.base} is not a slim python image pinned by digest"
        assert (int(match.group(1)), int(match.group(2))) >= (3, 11)


def test_dependencies_are_installed_only_as_pinned_and_hashed(stages: list[Stage]) -> None:
    build, runtime = stages[0], stages[-1]
    runs = " ".join(build.args_of("RUN"))
    assert "pip wheel --require-hashes --no-deps --wheel-dir /wheels -r constraints.txt" in runs
    assert "pip install --require-hashes --no-deps -r build-constraints.txt" in runs
    assert "--no-build-isolation" in runs, "the pinned setuptools builds the project"
    for run in runtime.args_of("RUN"):
        for install in run.split("&&"):
            if "pip install" in install:
                assert "--require-hashes" in install or "--no-deps" in install, install
    assert "--require-hashes -r /wheels/constraints.txt" in " ".join(runtime.args_of("RUN"))


def requirements(path: Path) -> dict[str, tuple[Requirement, list[str]]]:
    """Name -> (requirement, its hashes) of a hash-pinned requirements file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --hash=")
        requirement = Requirement(spec)
        result[canonicalize_name(requirement.name)] = (requirement, [o.strip() for o in options])
    return result


def closure(names: list[str]) -> set[str]:
    """Every distribution these need in this environment (markers evaluated here)."""
    seen: set[str] = set()
    todo = [Requirement(name) for name in names]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        if name in seen:
            continue
        seen.add(name)
        for dependency in metadata.requires(name) or []:
            needed = Requirement(dependency)
            extras = requirement.extras or {""}
            if not needed.marker or any(needed.marker.evaluate({"extra": e}) for e in extras):
                needed.marker = None
                todo.append(needed)
    return seen


@pytest.mark.parametrize(
    ("path", "needed"),
    [
        ("constraints.txt", PROJECT["dependencies"]),
        ("build-constraints.txt", PYPROJECT["build-system"]["requires"]),
    ],
)
def test_constraints_pin_exactly_the_dependencies_with_hashes(path: str, needed: list[str]) -> None:
    pinned = requirements(ROOT / path)
    for name, (requirement, hashes) in pinned.items():
        [specifier] = requirement.specifier
        assert specifier.operator == "==", f"{name} is not pinned"
        assert hashes, f"{name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    for wanted in map(Requirement, needed):
        version = pinned[canonicalize_name(wanted.name)][0].specifier
        assert wanted.specifier.contains(next(iter(version)).version), f"{wanted} vs {version}"
    here = closure(needed)
    assert here <= set(pinned), f"not pinned: {here - set(pinned)}"
    extra = {name for name in set(pinned) - here if not pinned[name][0].marker}
    assert not extra, f"pinned but needed by nothing: {extra}"


def healthcheck(stages: list[Stage]) -> list[str]:
    [check] = stages[-1].args_of("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    exec_form: list[str] = json.loads(command)
    return exec_form


def test_healthcheck_asks_healthz_with_python_alone(stages: list[Stage], tmp_path: Path) -> None:
    """The slim image has no curl: python's urllib on /healthz, on the configured port."""
    command = healthcheck(stages)
    assert command[:2] == ["python", "-c"]
    probe = [sys.executable, "-c", command[2]]
    with running_monitor("--redis-url", f"redis://127.0.0.1:{free_port()}/0") as monitor:
        env = monitor_env(LOCK_MONITOR_PORT=str(monitor.port))
        healthy = subprocess.run(probe, env=env, capture_output=True, timeout=30, check=False)
    assert healthy.returncode == 0, healthy.stderr
    env = monitor_env(LOCK_MONITOR_PORT=str(free_port()))
    nothing = subprocess.run(probe, env=env, capture_output=True, timeout=30, check=False)
    assert nothing.returncode != 0


def test_the_compose_service_has_the_images_healthcheck(stages: list[Stage]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    check = compose["services"]["lock-monitor"]["healthcheck"]
    assert check["test"] == ["CMD", *healthcheck(stages)]


def test_the_build_needs_buildkit_and_says_so() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1\n")
    assert "RUN --mount=" in text
    assert "BuildKit" in text


def test_build_stage_builds_a_wheel_and_runtime_installs_only_wheels(stages: list[Stage]) -> None:
    build, runtime = stages[0], stages[-1]
    assert any("pip wheel" in run or "-m build" in run for run in build.args_of("RUN"))
    installs = [run for run in runtime.args_of("RUN") if "pip install" in run]
    assert installs, "the runtime stage must install the wheel"
    assert all("--no-index" in run and f"from={build.name}" in run for run in installs), (
        "the runtime stage installs only the wheels built in stage 1"
    )
    assert not runtime.args_of("COPY") or all(
        f"--from={build.name}" in copy for copy in runtime.args_of("COPY")
    ), "the runtime stage must not copy the source tree"


def test_runtime_is_non_root_numeric_user_and_read_only_friendly(stages: list[Stage]) -> None:
    runtime = stages[-1]
    users = runtime.args_of("USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric uid: runAsNonRoot can only verify a number"
    assert int(uid) > 0
    assert not gid or int(gid) > 0
    env = " ".join(runtime.args_of("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes on a read-only root filesystem"


def test_port_entrypoint_and_cmd(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert "9150" in " ".join(runtime.args_of("EXPOSE")).split()
    assert json.loads(runtime.args_of("ENTRYPOINT")[-1]) == ["lock-monitor"]
    assert json.loads(runtime.args_of("CMD")[-1]) == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "lock-monitor" in scripts, "ENTRYPOINT names a console script the wheel installs"


def test_dockerignore_keeps_the_context_small_but_complete(stages: list[Stage]) -> None:
    sources = []
    for copy in stages[0].args_of("COPY"):
        words = [w for w in copy.split() if not w.startswith("--")]
        sources.extend(w.rstrip("/") for w in words[:-1])
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    for unwanted in (".git", "tests", "deploy", ".venv", "lock_monitor/__pycache__"):
        assert dockerignore_excludes(unwanted), f".dockerignore lets {unwanted} into the context"
