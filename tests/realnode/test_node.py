"""Real containers on a real kubelet: what the simulated kubelet cannot show.

A pod from an image built here (the debootstrap base) requests a fake GPU under the restricted Pod
Security Standard and runs as a container of containerd/runc in the node's cgroup, with the device
plugin's allocation in its environment; a Service in front of another pod is reached by name through
the node's DNS and kube-proxy's rules, over the CNI bridge.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from support import images
from support.controlplane import rest, wait_for
from support.realnode import CGROUP, GPUS, RealNode

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture
def ns(rn_api: Any) -> Iterator[str]:
    name = f"rn-{secrets.token_hex(3)}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    rest(rn_api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": labels}})
    wait_for(lambda: rest(rn_api, "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"), timeout=60)
    try:
        yield name
    finally:
        rest(rn_api, "DELETE", f"/api/v1/namespaces/{name}", body={"propagationPolicy": "Background"})


def pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [container],
            **spec,
        },
    }


def finished(api: Any, ns: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        p = rest(api, "GET", f"/api/v1/namespaces/{ns}/pods/{name}")
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    result: dict[str, Any] = wait_for(done, timeout=timeout, interval=1, what=f"pod {ns}/{name} to finish")
    return result


def termination(p: dict[str, Any]) -> str:
    state = p["status"]["containerStatuses"][0]["state"]
    return str(state.get("terminated", {}).get("message", ""))


PROBE = """
import json, os
open("/dev/termination-log", "w").write(json.dumps({
    "uid": os.getuid(),
    "gpus": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
    "cgroup": open("/proc/self/cgroup").read(),
    "hostname": os.uname().nodename,
}))
"""


def test_node_is_ready_with_fake_gpus(realnode: RealNode, rn_api: Any) -> None:
    node = rest(rn_api, "GET", f"/api/v1/nodes/{realnode.name}")
    assert node["status"]["capacity"]["nvidia.com/gpu"] == str(GPUS)
    runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
    assert runtime.startswith("containerd://"), runtime


def test_a_gpu_pod_runs_as_a_real_container(
    realnode: RealNode, rn_api: Any, ns: str, node_images: dict[str, images.Image]
) -> None:
    base = node_images["base"].ref
    body = pod(
        "gpu-probe",
        base,
        ["python3", "-c", PROBE],
        container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    )
    rest(rn_api, "POST", f"/api/v1/namespaces/{ns}/pods", body=body)
    done = finished(rn_api, ns, "gpu-probe")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["spec"]["nodeName"] == realnode.name
    seen = json.loads(termination(done).strip().splitlines()[-1])
    assert seen["uid"] == 65532 and seen["hostname"] == "gpu-probe"
    assert seen["gpus"] is not None and seen["gpus"].startswith("fake-gpu-"), seen
    assert f"/{CGROUP}/" in seen["cgroup"], "the container lives in the node's cgroup root"


def test_a_service_answers_by_name_through_dns_and_kube_proxy(
    realnode: RealNode, rn_api: Any, ns: str, node_images: dict[str, images.Image]
) -> None:
    base = node_images["base"].ref
    token = secrets.token_hex(8)
    server = pod(
        "web",
        base,
        ["python3", "-c", SERVER.replace("TOKEN", token)],
        container={"ports": [{"containerPort": 8080, "name": "http"}]},
    )
    server["spec"]["restartPolicy"] = "Always"
    rest(rn_api, "POST", f"/api/v1/namespaces/{ns}/pods", body=server)
    service = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    rest(rn_api, "POST", f"/api/v1/namespaces/{ns}/services", body=service)
    client = pod("client", base, ["python3", "-c", CLIENT.replace("NS", ns)])
    rest(rn_api, "POST", f"/api/v1/namespaces/{ns}/pods", body=client)
    done = finished(rn_api, ns, "client", timeout=240)
    assert done["status"]["phase"] == "Succeeded", termination(done)
    assert termination(done).strip().splitlines()[-1] == token


SERVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"TOKEN")
http.server.HTTPServer(("", 8080), H).serve_forever()
"""
CLIENT = """
import time, urllib.request
for attempt in range(120):
    try:
        body = urllib.request.urlopen("http://web.NS.svc.cluster.local/", timeout=3).read().decode()
        open("/dev/termination-log", "w").write(body); break
    except OSError as e:
        last = e; time.sleep(1)
else:
    raise SystemExit(f"no answer: {last}")
"""
