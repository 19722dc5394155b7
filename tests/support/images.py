"""Container images for the real-node tier, built here with podman from Debian's packages and our
Dockerfiles, cached as image archives keyed by what goes into them.

- ``base``: Debian bookworm minbase + Python 3.11 from debootstrap (tests/realnode/base-image.sh), the
  stand-in for the public ``python:3.11`` image, passed to our Dockerfiles as ``PYTHON_IMAGE``.
- ``pause``: the static Go program tests/controlplane/kubernetes/cmd/pause ``FROM scratch``, the
  sandbox image (registry.k8s.io is not reachable).
- ``operator``/``worker``: images/*/Dockerfile, unchanged, on that base.

No registry is reachable: pip inside a build reaches the package index through this machine's proxy,
whose CA bundle is mounted at build time only (``podman build -v``), never copied into an image. Podman
runs with its own storage under the cache directory and a containers.conf with ``default_ulimits``
(podman's default open-files limit exceeds this sandbox's hard limit).
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST_CA = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))


def cache_dir() -> Path:
    root = (
        os.environ.get("STRATOS_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stratos"
    )
    path = Path(root) / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Image:
    ref: str
    archive: Path


def _podman_env() -> dict[str, str]:
    cache = cache_dir()
    conf, storage = cache / "containers.conf", cache / "storage.conf"
    # podman's default nofile limit (1048576) exceeds this sandbox's hard limit: runc cannot set it.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={hard}:{hard}"]\n')
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{cache / "podman"}"\nrunroot = "/run/stratos-podman"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}


def podman(*args: str, timeout: float = 3600) -> str:
    result = subprocess.run(
        ["nice", "-n", "10", "podman", *args],
        capture_output=True,
        text=True,
        env=_podman_env(),
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}... failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def digest_of(*paths: Path, extra: str = "") -> str:
    """A short hash of files (directories: every file below, sorted) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for path in paths:
        files = (
            sorted(
                p
                for p in path.rglob("*")
                # Build leftovers (pip writes operator/stratos.egg-info in the checkout) are not source.
                if p.is_file()
                and "__pycache__" not in p.parts
                and not any(part.endswith(".egg-info") for part in p.parts)
            )
            if path.is_dir()
            else [path]
        )
        for f in files:
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _save(ref: str, name: str, key: str) -> Image:
    archive = cache_dir() / f"{name}-{key}.tar"
    if not archive.exists():
        tmp = archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        podman("save", "--format", "oci-archive", "-o", str(tmp), ref)
        tmp.rename(archive)
        _prune(name, key)
    return Image(ref, archive)


def _prune(name: str, key: str) -> None:
    """Drop the archives and podman images of this name's earlier keys, and the layers only they used:
    every change of the source makes a new worker image of several GB, and a cache kept across CI runs
    must not grow with each of them."""
    for old in cache_dir().glob(f"{name}-*.tar"):
        if old.name != f"{name}-{key}.tar":
            old.unlink(missing_ok=True)
    repo = f"localhost/stratos-{name}"
    for ref in podman(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={repo}"
    ).split():
        if ref != f"{repo}:{key}":
            podman("rmi", "--force", ref)
    podman("image", "prune", "--force")


def base_image() -> str:
    """localhost/stratos-base:<key>, built by tests/realnode/base-image.sh when missing."""
    result = subprocess.run(
        ["bash", str(REPO / "tests/realnode/base-image.sh")],
        capture_output=True, text=True, env=_podman_env(), timeout=3600,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"base-image.sh failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def base_image_archive() -> Image:
    """The base image itself, as an archive for the node (pods that need only Python run it)."""
    ref = base_image()
    return _save(ref, "base", ref.rsplit(":", 1)[1])


def pause_image(bin_dir: Path) -> Image:
    binary = bin_dir / "pause"
    key = digest_of(
        REPO / "tests/controlplane/kubernetes/cmd/pause",
        extra=hashlib.sha256(binary.read_bytes()).hexdigest(),
    )
    ref = f"localhost/stratos-pause:{key}"
    archive = cache_dir() / f"pause-{key}.tar"
    if not archive.exists():
        with tempfile.TemporaryDirectory() as ctx:
            (Path(ctx) / "pause").write_bytes(binary.read_bytes())
            os.chmod(Path(ctx) / "pause", 0o755)
            (Path(ctx) / "Containerfile").write_text(
                'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
            )
            podman("build", "--network=host", "-t", ref, ctx)
    return _save(ref, "pause", key)


def stratos_image(name: str) -> Image:
    """images/<name>/Dockerfile on the local base, keyed by the Dockerfile, the lock (pyproject.toml),
    the package source and the base."""
    base = base_image()
    dockerfile = REPO / "images" / name / "Dockerfile"
    key = digest_of(dockerfile, REPO / "pyproject.toml", REPO / "README.md", REPO / "operator", extra=base)
    ref = f"localhost/stratos-{name}:{key}"
    archive = cache_dir() / f"{name}-{key}.tar"
    if not archive.exists():
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as pip_conf:
            pip_conf.write("[global]\ncert = /etc/ssl/certs/host-ca.crt\n")
        try:
            podman(
                "build", "-f", str(dockerfile), "-t", ref, "--network=host",
                "--build-arg", f"PYTHON_IMAGE={base}",
                # Build time only: the proxy's CA for pip, never in a layer.
                "-v", f"{HOST_CA}:/etc/ssl/certs/host-ca.crt:ro",
                "-v", f"{pip_conf.name}:/etc/pip.conf:ro",
                str(REPO),
            )  # fmt: skip
        finally:
            os.unlink(pip_conf.name)
    return _save(ref, name, key)
