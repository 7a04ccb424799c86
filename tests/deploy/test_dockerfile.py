"""The Dockerfile's contract, checked from its text: no container engine runs on CI machines."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.servers import ROOT


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


def test_multi_stage_on_slim_python_311_or_newer(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "build and runtime must be separate stages"
    for stage in stages:
        match = re.fullmatch(r"python:(\d+)\.(\d+)[\w.-]*-slim[\w.-]*", stage.base)
        assert match, f"{stage.base} is not a slim python image"
        assert (int(match.group(1)), int(match.group(2))) >= (3, 11)


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
