"""Serving Deployment and Service manifests, vLLM's LoRA rank rounding, and the rollout patch."""

from __future__ import annotations

from typing import Any

import pytest

from stratos.api.placement import ResourceRequirements
from stratos.api.spec import DistillationJobSpec
from stratos.kube.config import OperatorConfig
from stratos.kube.rollout import deployment_ready, serving_patch
from stratos.kube.serving import (
    SPEC_HASH,
    VLLM_DEFAULTS,
    desired_serving,
    endpoint_url,
    merge_resources,
    service_name,
    serving_deployment,
    serving_name,
    serving_service,
)
from stratos.serving.commands import model_location, transformers_args, vllm_args, vllm_lora_rank
from support.jobs import job

CFG = OperatorConfig(serving_image="reg/serving:1", worker_image="reg/worker:1")
JOB_DIR = "/var/lib/stratos/jobs/dj1-u-1/train/tiny"
ADAPTER = f"{JOB_DIR}/adapter"
MERGED = f"{JOB_DIR}/merged"
TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}


def make(serving: dict[str, Any] | None = None, **spec: Any) -> tuple[dict[str, Any], DistillationJobSpec]:
    body = job(
        storage={"pvc": {"claimName": "data", "subPath": "team-a"}},
        servers={"tolerations": [TOLERATION]},
        serving=serving or {},
        **spec,
    )
    return body, DistillationJobSpec.model_validate(body["spec"])


def build(serving: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    body, spec = make(serving, **kw.pop("spec", {}))
    args: dict[str, Any] = dict(
        node="gpu-1",
        gpus=1,
        base_model_uri="file:///var/lib/stratos/models/base",
        adapter_path=ADAPTER,
        merged_path=None,
        model_name="tiny",
        cfg=CFG,
    )
    args.update(kw)
    return serving_deployment(body, spec, **args)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize(
    ("rank", "accepted"), [(1, 8), (8, 8), (9, 16), (16, 16), (17, 32), (64, 64), (100, 128), (256, 256)]
)
def test_lora_rank_rounds_up_to_a_rank_vllm_accepts(rank: int, accepted: int) -> None:
    assert vllm_lora_rank(rank) == accepted


@pytest.mark.parametrize("rank", [0, 257])
def test_lora_rank_outside_vllms_range_is_refused(rank: int) -> None:
    with pytest.raises(ValueError):
        vllm_lora_rank(rank)


def test_model_locations() -> None:
    assert model_location("hf://Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert model_location("file:///models/base") == "/models/base"
    assert model_location("/var/lib/stratos/base") == "/var/lib/stratos/base"
    with pytest.raises(ValueError):
        model_location("s3://bucket/base")


def test_command_lines() -> None:
    assert vllm_args(model="/m", model_name="s", max_model_len=2048, adapter_path="/a", lora_rank=20) == [
        "/m", "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "2048", "--served-model-name",
        "s-base", "--enable-lora", "--max-loras", "1", "--max-lora-rank", "32", "--lora-modules", "s=/a",
    ]  # fmt: skip
    assert transformers_args("s") == [
        "s", "--host", "0.0.0.0", "--port", "8000", "--device", "cpu", "--dtype", "auto",
        "--log-level", "info",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        vllm_args(model="/m", model_name="a/b", max_model_len=64)


def test_vllm_deployment_serves_the_adapter_with_lora_flags_on_the_pinned_gpu_node() -> None:
    deployment = build({"maxModelLen": 2048, "replicas": 2}, spec={"distillation": {"lora": {"rank": 20}}})
    meta = deployment["metadata"]
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert meta["name"] == serving_name("dj1", "u-1") and meta["namespace"] == "ns"
    assert meta["name"].startswith("dj1-serve-")
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("DistillationJob", "u-1", True)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"] == meta["labels"]
    assert meta["labels"]["stratos.io/job"] == "dj1" and meta["labels"]["stratos.io/stage"] == "serve"
    c = container(deployment)
    assert c["image"] == "reg/serving:1" and c["command"] == ["vllm", "serve"]
    args = c["args"]
    assert args[0] == "/var/lib/stratos/models/base"
    assert "--enable-lora" in args and flag(args, "--lora-modules") == f"tiny={ADAPTER}"
    assert flag(args, "--max-lora-rank") == "32"
    assert flag(args, "--max-model-len") == "2048" and flag(args, "--port") == "8000"
    assert flag(args, "--served-model-name") == "tiny-base"
    assert "--tensor-parallel-size" not in args
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HOME"] == "/tmp" and env["HF_HUB_OFFLINE"] == "1"
    pod = spec["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}]
    assert TOLERATION in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    storage = next(m for m in c["volumeMounts"] if m["name"] == "storage")
    assert storage == {
        "name": "storage",
        "mountPath": "/var/lib/stratos",
        "readOnly": True,
        "subPath": "team-a",
    }
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "data"}} in pod["volumes"]
    # GPUs are scarce on the node: roll by replacing, never by surging an extra pod.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_probes_ask_health_with_a_startup_budget_for_model_load() -> None:
    c = container(build())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    assert c["livenessProbe"]["failureThreshold"] >= 3


def test_pods_are_restricted_with_writable_tmp_and_cache_only() -> None:
    deployment = build()
    pod, c = deployment["spec"]["template"]["spec"], container(deployment)
    assert pod["automountServiceAccountToken"] is False
    # No fixed user id: the image's USER applies, OpenShift's restricted-v2 assigns its own.
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    ctx = c["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["runAsNonRoot"] is True and "runAsUser" not in ctx
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/cache", "/dev/shm"}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "cache", "emptyDir": {}} in pod["volumes"]


def test_vllm_serves_merged_weights_without_lora_flags_and_hub_models_online() -> None:
    args = container(build(merged_path=MERGED))["args"]
    assert args[0] == MERGED and flag(args, "--served-model-name") == "tiny"
    assert not any(a.startswith("--enable-lora") or a.startswith("--lora") for a in args)
    c = container(build(base_model_uri="hf://Qwen/Qwen2.5-0.5B-Instruct", gpus=2))
    assert c["args"][0] == "Qwen/Qwen2.5-0.5B-Instruct" and flag(c["args"], "--tensor-parallel-size") == "2"
    assert "HF_HUB_OFFLINE" not in {e["name"] for e in c["env"]}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_vllm_needs_a_gpu_and_a_loadable_model() -> None:
    with pytest.raises(ValueError, match="GPU"):
        build(gpus=0)
    with pytest.raises(ValueError):
        build(base_model_uri="s3://bucket/base")
    with pytest.raises(ValueError):
        build(adapter_path=None)


def test_transformers_deployment_serves_merged_weights_on_cpu_under_the_model_name() -> None:
    deployment = build({"engine": "transformers"}, merged_path=MERGED, adapter_path=ADAPTER)
    c = container(deployment)
    assert c["image"] == "reg/worker:1" and c["command"] == ["transformers", "serve"]
    assert c["args"][0] == "tiny" and flag(c["args"], "--device") == "cpu"
    assert flag(c["args"], "--host") == "0.0.0.0" and flag(c["args"], "--port") == "8000"
    assert c["workingDir"] == "/models"
    model = next(m for m in c["volumeMounts"] if m["name"] == "storage")
    assert model == {
        "name": "storage",
        "mountPath": "/models/tiny",
        "readOnly": True,
        "subPath": "team-a/jobs/dj1-u-1/train/tiny/merged",
    }
    assert "nvidia.com/gpu" not in c["resources"]["requests"] | c["resources"]["limits"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_transformers_uses_a_gpu_only_when_resources_ask_and_cannot_load_adapters() -> None:
    gpu = {"engine": "transformers", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    c = container(build(gpu, merged_path=MERGED))
    assert flag(c["args"], "--device") == "auto"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    with pytest.raises(ValueError, match="adapter"):
        build({"engine": "transformers"}, merged_path=None)
    with pytest.raises(ValueError, match="storage"):
        build({"engine": "transformers"}, merged_path="/elsewhere/merged")


def test_service_selects_the_serving_pods_on_port_8000() -> None:
    body, _ = make()
    service, deployment = serving_service(body), build()
    assert service["kind"] == "Service" and service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["name"] == service_name("dj1", "u-1") == serving_name("dj1", "u-1")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    port = {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    assert service["spec"]["ports"] == [port]
    assert service["metadata"]["ownerReferences"] == deployment["metadata"]["ownerReferences"]
    assert endpoint_url("dj1", "u-1", "ns") == f"http://{service_name('dj1', 'u-1')}.ns.svc:8000/v1"
    assert service_name("7up", "u")[0].isalpha() and serving_name("7up", "u").startswith("7up-serve-")
    # Issue 15: jobs "1job" and "s1job" once shared the Service "s1job-serve".
    assert service_name("1job", "uid-a") != service_name("s1job", "uid-b")
    assert service_name("1job", "uid-a").startswith("s1job-serve-")


def test_names_are_deterministic_and_short() -> None:
    assert build() == build()
    long = serving_name("j" * 70, "u")
    assert len(long) <= 63 and long == serving_name("j" * 70, "u")


def test_user_resources_merge_over_defaults_and_stay_valid() -> None:
    merged = merge_resources(VLLM_DEFAULTS, ResourceRequirements(limits={"memory": "64Gi", "cpu": "8"}))
    assert merged["limits"] == {"memory": "64Gi", "cpu": "8"}
    assert merged["requests"] == {}  # default requests dropped where the user set only a limit
    gpus = ResourceRequirements(requests={"cpu": "4", "nvidia.com/gpu": "2"})
    merged = merge_resources(VLLM_DEFAULTS, gpus)
    assert merged["requests"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert merged["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "2"}
    defaults = merge_resources(VLLM_DEFAULTS, None)
    assert defaults == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "32Gi"}}


def plan(serving: dict[str, Any] | None = None, node: str | None = "gpu-1") -> Any:
    body, spec = make(serving)
    return desired_serving(
        body, spec, node=node, gpus=1, base_model_uri="hf://org/base", adapter_path=ADAPTER,
        merged_path=None, model_name="tiny", cfg=CFG,
    )  # fmt: skip


def live(obj: dict[str, Any]) -> dict[str, Any]:
    """As the API server returns it: extra defaulted fields, a status."""
    return {**obj, "metadata": {**obj["metadata"], "uid": "x", "generation": 3}, "status": {}}


def test_disabled_serving_desires_nothing() -> None:
    assert plan({"enabled": False}) is None


def test_desired_serving_names_the_endpoint() -> None:
    p = plan()
    assert (p.url, p.model) == (f"http://{service_name('dj1', 'u-1')}.ns.svc:8000/v1", "tiny")
    assert p.endpoint(ready=True).to_api() == {"url": p.url, "model": "tiny", "ready": True}


def test_unchanged_spec_needs_no_patch() -> None:
    p = plan()
    assert serving_patch(live(p.deployment), plan().deployment) is None
    assert serving_patch(live(p.service), plan().service) is None


def test_replica_and_resource_changes_patch_without_retraining() -> None:
    before = live(plan().deployment)
    scaled = plan({"replicas": 3}).deployment
    patch = serving_patch(before, scaled)
    assert patch is not None and patch["spec"]["replicas"] == 3
    assert patch["metadata"]["annotations"][SPEC_HASH] == scaled["metadata"]["annotations"][SPEC_HASH]
    assert patch["metadata"]["annotations"][SPEC_HASH] != before["metadata"]["annotations"][SPEC_HASH]
    bigger = plan({"resources": {"limits": {"memory": "48Gi"}}}).deployment
    patch = serving_patch(before, bigger)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "48Gi"
    # A merge patch keeps map keys it does not mention: dropping the node pin must null it.
    unpinned = serving_patch(before, plan(node=None).deployment)
    assert unpinned is not None and unpinned["spec"]["template"]["spec"]["affinity"] is None


def test_deployment_ready_after_rollout_only() -> None:
    def rolled(observed: int, ready: int, updated: int) -> dict[str, Any]:
        status = {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated}
        return {"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}

    assert not deployment_ready(None)
    assert not deployment_ready(rolled(1, 2, 2))  # the controller has not seen the new spec yet
    assert not deployment_ready(rolled(2, 1, 2))
    assert not deployment_ready(rolled(2, 2, 1))  # an old pod is still the one answering
    assert deployment_ready(rolled(2, 2, 2))
    zero = {"metadata": {"generation": 1}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}}
    assert not deployment_ready(zero)
