"""The images built from our Dockerfiles, run as containers straight through containerd and runc.

The operator image (images/operator/Dockerfile on the local Debian base) starts under its own numeric
user with a read-only root filesystem, finds its name, passwd entry and home, imports the operator's
modules, and carries nothing of the build's credentials (the CA bundle and pip config mounted at build
time only).
"""

from __future__ import annotations

import json

from support import images
from support.realnode import RealNode

WHO = """
import getpass, json, os, pwd
CA = "/etc/ssl/certs/host-ca.crt"
import kopf, kubernetes, stratos.controller.operator
print(json.dumps({
    "uid": os.getuid(),
    "user": getpass.getuser(),
    "passwd": pwd.getpwuid(os.getuid()).pw_name,
    "home": os.path.expanduser("~"),
    "hf_home": os.environ.get("HF_HOME"),
    # Build-time mounts: at most the empty mount-point stubs podman leaves, never their content.
    "build_ca": os.path.exists(CA) and os.path.getsize(CA),
    "pip_conf": os.path.exists("/etc/pip.conf") and os.path.getsize("/etc/pip.conf"),
}))
"""


def test_operator_image_runs_as_its_named_user_read_only(
    runtime: RealNode, node_images: dict[str, images.Image]
) -> None:
    result = runtime.run_container(node_images["operator"].ref, "python", "-c", WHO, name="operator-image")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "uid": 65532,
        "user": "stratos",
        "passwd": "stratos",
        "home": "/tmp",
        "hf_home": None,
        "build_ca": 0,
        "pip_conf": 0,
    }


def test_the_base_image_is_debians_python(runtime: RealNode, node_images: dict[str, images.Image]) -> None:
    code = (
        "import sys, ssl; print(sys.version_info[:2] == (3, 11), ssl.OPENSSL_VERSION.startswith('OpenSSL'))"
    )
    result = runtime.run_container(node_images["base"].ref, "python3", "-c", code, name="base-image")
    assert result.returncode == 0 and result.stdout.split() == ["True", "True"], result.stderr


WORKER = """
import getpass, json, os, pwd
CA = "/etc/ssl/certs/host-ca.crt"
import torch, transformers, peft, trl, datasets, accelerate
import stratos.workloads.train, stratos.workloads.evaluate
print(json.dumps({
    "uid": os.getuid(),
    "user": getpass.getuser(),
    "passwd": pwd.getpwuid(os.getuid()).pw_name,
    "home": os.path.expanduser("~"),
    "hf_home": os.environ.get("HF_HOME"),
    "cpu_matmul": float((torch.ones(2, 2) @ torch.ones(2, 2)).sum()),
    "build_ca": os.path.exists(CA) and os.path.getsize(CA),
}))
"""


def test_worker_image_runs_the_stage_programs_as_its_user(
    runtime: RealNode, node_images: dict[str, images.Image]
) -> None:
    """images/worker/Dockerfile: torch and the training stack import under the image's user, read-only but
    for /tmp (as in a stage pod), with no HF_HOME baked in (stage pods point it at the job's storage) and
    no build-time CA."""
    result = runtime.run_container(
        node_images["worker"].ref, "python", "-c", WORKER, name="worker-image", tmp=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "uid": 65532,
        "user": "stratos",
        "passwd": "stratos",
        "home": "/tmp",
        "hf_home": None,
        "cpu_matmul": 8.0,
        "build_ca": 0,
    }
