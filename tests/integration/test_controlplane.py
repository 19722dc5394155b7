"""The test control plane behaves like a cluster: the facts the other integration tests rely on."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from support.controlplane import CommandError, ControlPlane, rest, wait_for
from support.kubelet import FakeKubelet, Outcome

# What the restricted Pod Security Standard demands of every container.
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod(
    name: str,
    *,
    command: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    node: str | None = None,
    **container: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": "python:3.11-slim",
                "command": command or ["sleep", "3600"],
                "securityContext": RESTRICTED,
                "resources": resources or {},
                **container,
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def get_pod(api: Any, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = rest(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    return result


def test_api_server_answers(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert "Version:" in control_plane.helm("version").stdout
    control_plane.check_alive()


def test_pod_security_restricted_rejects_privileged_pod(control_plane: ControlPlane, namespace: str) -> None:
    privileged = pod("privileged", securityContext={"privileged": True})
    with pytest.raises(CommandError) as err:
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(privileged))
    assert 'violates PodSecurity "restricted:latest"' in err.value.stderr
    assert "privileged" in err.value.stderr
    # A compliant pod is admitted.
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod("compliant")))


def test_service_account_identity_is_checked_by_rbac(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "reader")
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    denied = control_plane.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr

    control_plane.kubectl(
        "create", "role", "read-cm", "--verb=get,list", "--resource=configmaps", "-n", namespace
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "read-cm",
        "--role=read-cm",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    wait_for(
        lambda: (
            control_plane.kubectl(
                "get", "configmaps", "-n", namespace, kubeconfig=kubeconfig, check=False
            ).returncode
            == 0
        ),
        what="RBAC grant to take effect",
    )
    still_denied = control_plane.kubectl(
        "get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False
    )
    assert "Forbidden" in still_denied.stderr


def test_scheduler_binds_gpu_pod_to_the_gpu_node(api: Any, namespace: str, gpu_nodes: Any) -> None:
    gpu_nodes("gpu-node", gpus=2, labels={"nvidia.com/gpu.product": "NVIDIA-L4"})
    gpu_nodes("cpu-node", gpus=0)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    rest(api, "POST", pods, body=pod("wants-one", resources={"limits": {"nvidia.com/gpu": "1"}}))
    rest(api, "POST", pods, body=pod("wants-eight", resources={"limits": {"nvidia.com/gpu": "8"}}))

    bound = wait_for(
        lambda: get_pod(api, namespace, "wants-one")["spec"].get("nodeName"),
        timeout=60,
        what="the scheduler to bind wants-one",
    )
    assert bound == "gpu-node"

    def unschedulable() -> dict[str, Any] | None:
        conditions = get_pod(api, namespace, "wants-eight").get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    condition = wait_for(unschedulable, timeout=60, what="wants-eight to be found unschedulable")
    assert condition["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in condition["message"]
    events = rest(
        api,
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        query={"fieldSelector": "involvedObject.name=wants-eight"},
    )["items"]
    assert any(e["reason"] == "FailedScheduling" for e in events)
    assert not get_pod(api, namespace, "wants-eight")["spec"].get("nodeName")


def test_garbage_collector_deletes_dependents(api: Any, namespace: str) -> None:
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = rest(api, "POST", cms, body={"metadata": {"name": "owner"}, "data": {"a": "1"}})
    rest(
        api,
        "POST",
        cms,
        body={
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
            "data": {"b": "2"},
        },
    )
    rest(api, "DELETE", f"{cms}/owner")

    def dependent_gone() -> bool:
        try:
            rest(api, "GET", f"{cms}/dependent")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(dependent_gone, timeout=90, what="the garbage collector to delete the dependent")


def test_fake_kubelet_runs_a_pod_and_reports_its_termination_message(
    api: Any,
    namespace: str,
    gpu_nodes: Any,
    fake_kubelet: FakeKubelet,
) -> None:
    gpu_nodes("kubelet-node", gpus=1)
    fake_kubelet.add_node("kubelet-node")
    base = f"/api/v1/namespaces/{namespace}"
    rest(
        api,
        "POST",
        f"{base}/secrets",
        body={"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}},
    )
    rest(
        api,
        "POST",
        f"{base}/configmaps",
        body={"metadata": {"name": "cfg"}, "data": {"config.json": '{"n": 41}'}},
    )
    program = (
        "import json, os\n"
        "cfg = json.load(open('/etc/app/config.json'))\n"
        "open('/dev/termination-log', 'w').write(json.dumps("
        "{'n': cfg['n'] + 1, 'token': os.environ['TOKEN'], 'mode': os.environ['MODE']}))\n"
        "print('done')\n"
    )
    body = pod(
        "worker",
        node="kubelet-node",
        command=["python", "-c", program],
        env=[
            {"name": "MODE", "value": "test"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        ],
        volumeMounts=[{"name": "cfg", "mountPath": "/etc/app", "readOnly": True}],
    )
    body["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}}]
    rest(api, "POST", f"{base}/pods", body=body)

    def finished() -> dict[str, Any] | None:
        status = get_pod(api, namespace, "worker").get("status", {})
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(finished, timeout=60, what="the worker pod to finish")
    logs = fake_kubelet.logs(namespace, "worker")
    assert status["phase"] == "Succeeded", (status, logs, fake_kubelet.errors)
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert json.loads(terminated["message"]) == {"n": 42, "token": "s3cret", "mode": "test"}
    assert logs.strip() == "done"


def test_fake_kubelet_reports_failures_and_intercepted_outcomes(
    api: Any,
    namespace: str,
    gpu_nodes: Any,
    tmp_path: Path,
) -> None:
    gpu_nodes("kubelet-node-2", gpus=1)

    def intercept(p: Any) -> Outcome | None:
        if p["metadata"]["name"] == "oom":
            return Outcome(137, "OOMKilled", "")
        return None

    def failed(name: str) -> dict[str, Any] | None:
        status: dict[str, Any] = get_pod(api, namespace, name).get("status", {})
        return status if status.get("phase") == "Failed" else None

    with FakeKubelet(api, ["kubelet-node-2"], tmp_path, intercept=intercept):
        pods = f"/api/v1/namespaces/{namespace}/pods"
        rest(
            api,
            "POST",
            pods,
            body=pod(
                "fails",
                node="kubelet-node-2",
                command=["python", "-c", "import sys; print('boom'); sys.exit(3)"],
                terminationMessagePolicy="FallbackToLogsOnError",
            ),
        )
        rest(api, "POST", pods, body=pod("oom", node="kubelet-node-2"))
        for name, code, reason, message in (("fails", 3, "Error", "boom"), ("oom", 137, "OOMKilled", "")):
            status = wait_for(functools.partial(failed, name), timeout=60, what=f"{name} to fail")
            terminated = status["containerStatuses"][0]["state"]["terminated"]
            assert (terminated["exitCode"], terminated["reason"]) == (code, reason)
            assert terminated.get("message", "").strip() == message


def test_job_pod_is_scheduled_and_run_with_a_shared_claim(
    api: Any, namespace: str, gpu_nodes: Any, fake_kubelet: FakeKubelet, bound_pvc: Any
) -> None:
    """The path a stage Job takes: Job controller -> scheduler -> (fake) kubelet -> Job complete."""
    gpu_nodes("job-node", gpus=1)
    fake_kubelet.add_node("job-node")
    bound_pvc(namespace, "data")
    (fake_kubelet.claim_dir(namespace, "data") / "input.txt").write_text("21")
    program = (
        "n = int(open('/data/input.txt').read())\n"
        "open('/data/output.txt', 'w').write(str(2 * n))\n"
        "open('/dev/termination-log', 'w').write('{\"ok\": true}')\n"
    )
    template = pod(
        "unused",
        command=["python3", "-c", program],
        resources={"limits": {"nvidia.com/gpu": "1"}},
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    template["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "stage"},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
    rest(api, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", body=job)

    def complete() -> dict[str, Any] | None:
        status: dict[str, Any] = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/stage")[
            "status"
        ]
        done = {c["type"] for c in status.get("conditions", []) if c["status"] == "True"}
        return status if done & {"Complete", "Failed"} else None

    status = wait_for(complete, timeout=90, what="the Job to finish")
    assert status.get("succeeded") == 1, (
        status,
        [r.logs() for r in fake_kubelet.runs()],
        fake_kubelet.errors,
    )
    assert (fake_kubelet.claim_dir(namespace, "data") / "output.txt").read_text() == "42"
    (run,) = fake_kubelet.runs()
    assert run.node == "job-node" and run.message == '{"ok": true}'


def test_fake_kubelet_kills_a_deleted_pod(
    api: Any, namespace: str, gpu_nodes: Any, fake_kubelet: FakeKubelet
) -> None:
    gpu_nodes("delete-node", gpus=1)
    fake_kubelet.add_node("delete-node")
    pods = f"/api/v1/namespaces/{namespace}/pods"
    rest(api, "POST", pods, body=pod("sleeper", node="delete-node", command=["sleep", "600"]))
    wait_for(
        lambda: get_pod(api, namespace, "sleeper").get("status", {}).get("phase") == "Running",
        what="sleeper to run",
    )
    run = fake_kubelet.run_for(namespace, "sleeper")
    assert run is not None and run.process is not None and run.process.poll() is None
    rest(api, "DELETE", f"{pods}/sleeper")  # graceful, as kubectl delete does

    def gone() -> bool:
        try:
            get_pod(api, namespace, "sleeper")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=30, what="the deleted pod to go away")
    assert run.process.poll() is not None


def test_fake_kubelet_restarts_on_failure_like_a_kubelet(
    api: Any, namespace: str, gpu_nodes: Any, fake_kubelet: FakeKubelet
) -> None:
    gpu_nodes("restart-node", gpus=1)
    fake_kubelet.add_node("restart-node")
    program = (
        "import os, sys\n"
        "marker = os.path.join(os.environ['SCRATCH'], 'tried')\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    sys.exit(1)\n"
    )
    body = pod(
        "flaky",
        node="restart-node",
        command=["python", "-c", program],
        env=[{"name": "SCRATCH", "value": "/scratch"}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    body["spec"]["restartPolicy"] = "OnFailure"
    body["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    rest(api, "POST", f"/api/v1/namespaces/{namespace}/pods", body=body)

    def succeeded() -> dict[str, Any] | None:
        status: dict[str, Any] = get_pod(api, namespace, "flaky").get("status", {})
        return status if status.get("phase") == "Succeeded" else None

    status = wait_for(succeeded, timeout=60, what="flaky to succeed on its second run")
    container = status["containerStatuses"][0]
    assert container["restartCount"] == 1
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["state"]["terminated"]["exitCode"] == 0
