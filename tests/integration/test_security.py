"""Security on the real control plane (issue #8, item 5).

A planted API key (a Secret with a distinctive value, named by the teachers' apiKeySecretRef) reaches the
stage programs that call the teacher, and nowhere else: a real local teacher that refuses any other key
answers the whole pipeline, and a hostile endpoint that echoes the key it received back in its error is
evaluated beside it; then the key is searched for everywhere the system writes: the DistillationJob and
its status, Events, the operator's log, the stage ConfigMaps, Jobs and pods, the stage pods' logs and
termination messages, and every file on the job's volume. The operator runs under the chart's
ServiceAccount, which may not read Secrets at all; stage pods pass the restricted Pod Security Standard
the namespace enforces, and carry no ServiceAccount token.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stratos.local.teacher import answer
from support.controlplane import ControlPlane, rest, wait_for
from support.fake_openai import FakeOpenAI
from support.kubelet import FakeKubelet, Outcome
from support.operator import OPERATOR_NS, RELEASE, OperatorProcess
from support.pipeline import pipeline_job, prepare

pytest_plugins = ["support.operator"]

SECRET, SECRET_KEY = "llm-keys", "openai"
# A second credential every pod of the job gets through spec.pods.env (like a Hub token).
HUB_SECRET, HUB_KEY = "hub-token", "token"
STAGE_LABEL = "stratos.io/stage"
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
KEY_STAGES = {"teacher-eval", "synthesize"}  # the stages that talk to the teacher


def programmatic_reply(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """The built-in programmatic Mahjong teacher's answer (stratos.local.teacher), served by FakeOpenAI."""
    prompt = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return answer(prompt, accuracy=0.2)


class EchoingEndpoint:
    """An OpenAI-compatible endpoint that refuses every request with 401 and echoes the Authorization
    header it received in the error, key and all: the worst an endpoint can do with a key."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _refuse(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization", "")
                endpoint.seen.append(auth)
                body = json.dumps(
                    {"error": {"message": f"Incorrect API key provided: {auth}", "code": "invalid_api_key"}}
                ).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> EchoingEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def with_key(teacher: dict[str, Any]) -> dict[str, Any]:
    teacher["endpoint"]["apiKeySecretRef"] = {"name": SECRET, "key": SECRET_KEY}
    return teacher


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def leaks(key: str, api: Any, namespace: str, operator: OperatorProcess, kubelet: FakeKubelet) -> list[str]:
    """Every place outside the Secret where ``key`` shows up (empty: nowhere)."""
    found: list[str] = []
    base = f"/api/v1/namespaces/{namespace}"
    places: dict[str, Any] = {
        "the DistillationJob": rest(
            api, "GET", f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs"
        ),
        "Events": rest(api, "GET", f"{base}/events"),
        "ConfigMaps": rest(api, "GET", f"{base}/configmaps"),
        "Jobs": rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs"),
        "Pods": rest(api, "GET", f"{base}/pods"),
    }
    found += [where for where, value in places.items() if key in dump(value)]
    if key in operator.log_path.read_text(errors="replace"):
        found.append("the operator's log")
    for run in kubelet.runs():
        if key in run.logs():
            found.append(f"the log of pod {run.name}")
        if key in (run.message or ""):
            found.append(f"the termination message of pod {run.name}")
    # Every file any pod could write: its scratch directory (termination log, emptyDirs) and the volume.
    needle = key.encode()
    for path in files_under(kubelet.workdir):
        if needle in path.read_bytes():
            found.append(f"file {path.relative_to(kubelet.workdir)}")
    return found


@pytest.mark.slow  # the pipeline really runs: tiny students are probed, trained and evaluated
def test_a_planted_api_key_reaches_only_the_teacher(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    key = f"sk-stratos-canary-{secrets.token_hex(16)}"
    hub = f"hf_stratos_canary_{secrets.token_hex(16)}"
    for name, item, value in ((SECRET, SECRET_KEY, key), (HUB_SECRET, HUB_KEY, hub)):
        rest(
            api,
            "POST",
            f"/api/v1/namespaces/{namespace}/secrets",
            body={"metadata": {"name": name}, "stringData": {item: value}},
        )
    prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)
    with (
        FakeOpenAI(model="programmatic", require_key=key, reply=programmatic_reply) as teacher,
        EchoingEndpoint() as echo,
    ):
        job = pipeline_job("keyed", namespace, teacher.base_url)
        prog = with_key(job["spec"]["teachers"][0])
        hostile = with_key(
            {
                "name": "echo",
                "endpoint": {"baseURL": echo.base_url, "model": "m"},
                "costPerMillionTokens": 0.5,
            }
        )
        job["spec"]["teachers"] = [prog, hostile]
        job["spec"]["retries"] = {"backoffLimit": 0}
        hub_ref = {"secretKeyRef": {"name": HUB_SECRET, "key": HUB_KEY}}
        job["spec"]["pods"] = {"env": [{"name": "HF_TOKEN", "valueFrom": hub_ref}]}
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))

        def finished() -> dict[str, Any] | None:
            dj = rest(api, "GET", f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs/keyed")
            return dj if dj.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

        dj = wait_for(finished, timeout=600, interval=2, what="the keyed pipeline to finish")
    status = dj["status"]
    assert status["phase"] == "Succeeded", (status.get("message"), fake_kubelet.errors, operator.log_tail())

    # The key did its job: the teacher that accepts only this key answered every stage that asked ...
    assert teacher.completions > 0 and all(r.status == 200 for r in teacher.chat_requests)
    assert {r.headers.get("authorization") for r in teacher.chat_requests} == {f"Bearer {key}"}
    # ... and the hostile endpoint got it too and threw it back; that teacher was recorded as failed.
    assert echo.seen and set(echo.seen) == {f"Bearer {key}"}
    assert status["teacher"]["selected"] == "prog"
    (failed,) = [c for c in status["teacher"]["candidates"] if c["name"] == "echo"]
    assert failed.get("error") and "401" in failed["error"], failed
    # It came only through secretKeyRef: only the stages that call the teacher had it in their environment.
    for run in fake_kubelet.runs():
        pod = rest(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{run.name}")
        stage = pod["metadata"]["labels"][STAGE_LABEL]
        assert (key in run.env.values()) == (stage in KEY_STAGES), (run.name, stage)
        assert run.env.get("HF_TOKEN") == hub, run.name  # spec.pods.env reaches every stage
        env = pod["spec"]["containers"][0].get("env", [])
        refs = [e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})]
        teacher_refs = [r for r in refs if r["name"] == SECRET]
        assert teacher_refs == ([{"name": SECRET, "key": SECRET_KEY}] if stage in KEY_STAGES else []), (
            run.name
        )
        assert {"name": HUB_SECRET, "key": HUB_KEY} in refs, run.name

    assert leaks(key, api, namespace, operator, fake_kubelet) == []
    assert leaks(hub, api, namespace, operator, fake_kubelet) == []
    # The search is not blind: the hostile endpoint's address, which the error text names like the key,
    # is found where the error went.
    control = leaks(echo.base_url.split("//")[1].split("/")[0], api, namespace, operator, fake_kubelet)
    print(failed["error"], control, sep="\n")
    assert {"the DistillationJob", "ConfigMaps", "Pods"} <= set(control), control
    assert any(c.startswith("the log of pod") for c in control), control
    assert any(c.startswith("the termination message") for c in control), control
    assert any(c.startswith("file ") for c in control), control


def test_the_operator_may_not_read_secrets(
    operator: OperatorProcess, control_plane: ControlPlane, namespace: str
) -> None:
    who = f"system:serviceaccount:{OPERATOR_NS}:{RELEASE}"
    whoami = control_plane.kubectl("auth", "whoami", "--kubeconfig", str(operator.kubeconfig), "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == who  # the operator's own identity

    def can(verb: str, resource: str, *scope: str) -> bool:
        result = control_plane.kubectl("auth", "can-i", verb, resource, f"--as={who}", *scope, check=False)
        return result.stdout.strip() == "yes"

    for scope in (("-n", namespace), ("-n", OPERATOR_NS), ("--all-namespaces",)):
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert not can(verb, "secrets", *scope), (verb, scope)
    assert not can("*", "*", "--all-namespaces")
    assert not can("create", "serviceaccounts", "--subresource=token", "--all-namespaces")
    assert not can("create", "pods/exec", "-n", namespace)
    # ... while it can do its job.
    for verb, resource in (
        ("create", "jobs.batch"),
        ("create", "configmaps"),
        ("patch", "distillationjobs.stratos.io/status"),
    ):
        assert can(verb, resource, "-n", namespace), (verb, resource)


# The stage pods: what the restricted Pod Security Standard requires, and no API credentials.
RESULTS = {
    "teacher-eval": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
    "student-probe": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
    "synthesize": {"ok": True, "kept": 32, "real": 24, "synthetic": 8, "rejected": {}, "rejectedTotal": 0},
    "train": {"ok": True, "steps": 4, "seconds": 1.0, "trainLoss": 1.5, "mergedPath": "merged"},
    "evaluate": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
}


def scripted_success(pod: Mapping[str, Any]) -> Outcome | None:
    stage = (pod["metadata"].get("labels") or {}).get(STAGE_LABEL)
    return Outcome(0, "Completed", json.dumps(RESULTS[stage])) if stage in RESULTS else None


def test_stage_pods_run_restricted_without_a_token(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    labels = rest(api, "GET", f"/api/v1/namespaces/{namespace}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # admission checked every pod below
    rest(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={"metadata": {"name": SECRET}, "stringData": {SECRET_KEY: "sk-not-used-here"}},
    )
    fake_kubelet.intercept = scripted_success
    prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)
    job = pipeline_job("restricted", namespace, "http://127.0.0.1:9/v1")
    with_key(job["spec"]["teachers"][0])
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
    wait_for(
        lambda: (
            rest(api, "GET", f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs/restricted")
            .get("status", {})
            .get("phase")
            == "Succeeded"
        ),
        timeout=120,
        what="the job to finish",
    )
    pods = rest(api, "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": STAGE_LABEL})[
        "items"
    ]
    stages = sorted(p["metadata"]["labels"][STAGE_LABEL] for p in pods)
    assert set(stages) == set(RESULTS), stages  # every kind of stage pod was admitted and ran
    for pod in pods:
        name, spec = pod["metadata"]["name"], pod["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, name
        for volume in spec["volumes"]:
            assert "hostPath" not in volume, (name, volume)
            sources = (volume.get("projected") or {}).get("sources", [])
            assert not any("serviceAccountToken" in s for s in sources), (name, volume)
            assert not volume["name"].startswith("kube-api-access"), (name, volume)
        pod_ctx = spec["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"], name
            assert ctx.get("privileged") is not True and ctx["readOnlyRootFilesystem"] is True, name
            assert not any(m["mountPath"].startswith(TOKEN_PATH) for m in container.get("volumeMounts", []))
    for run in fake_kubelet.runs():  # what the (test) kubelet mounted: no token anywhere
        assert not any(path.startswith(TOKEN_PATH) for path in run.path_map), run.path_map
