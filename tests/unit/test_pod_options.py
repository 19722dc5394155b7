"""Storage, credentials, identity and security of the pods the operator creates (stage Jobs, serving).

Hand-written expectations against the manifests (stratos.kube.children, stratos.kube.serving)
and the stage machine's decision when a job has nowhere to keep its files.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import STORAGE_DIR, SecretEnv, StageRun
from stratos.controller.executor import KubeExecutor
from stratos.kube.children import HF_HOME, stage_job
from stratos.kube.config import OperatorConfig, PodDefaults, pod_defaults
from stratos.kube.podopts import StorageUnset
from stratos.kube.serving import serving_deployment
from stratos.pipeline import conditions as c
from stratos.pipeline.machine import reconcile
from support.jobs import NODES, NOW, ScriptedExecutor, job

TRAIN = StageRun("train", "stratos.workloads.train", {}, candidate="tiny", node="gpu-1", gpus=1)
SYNTH = StageRun(
    "synthesize", "stratos.workloads.synthesize", {}, secret_env=(SecretEnv("TEACHER_API_KEY", "k", "v"),)
)


def manifest(
    body: dict[str, Any], run: StageRun = TRAIN, cfg: OperatorConfig | None = None
) -> dict[str, Any]:
    spec = DistillationJobSpec.model_validate(body["spec"])
    return stage_job(body, spec, run, cfg or OperatorConfig())


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = obj["spec"]["template"]["spec"]
    return pod


def env_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_of(obj)["containers"][0]["env"]}


# --- storage ---------------------------------------------------------------------------------------


def test_unset_storage_uses_the_operator_default_claim() -> None:
    obj = manifest(job(), cfg=OperatorConfig(default_claim="stratos-data"))
    volumes = pod_of(obj)["volumes"]
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "stratos-data"}} in volumes
    mount = next(m for m in pod_of(obj)["containers"][0]["volumeMounts"] if m["name"] == "storage")
    assert mount == {"name": "storage", "mountPath": STORAGE_DIR}
    # Never a scratch volume in the storage's place.
    assert all("emptyDir" not in v for v in volumes if v["name"] == "storage")


def test_the_job_claim_wins_over_the_default() -> None:
    body = job(storage={"pvc": {"claimName": "mine", "subPath": "a/b"}})
    obj = manifest(body, cfg=OperatorConfig(default_claim="stratos-data"))
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "mine"}} in pod_of(obj)["volumes"]
    mount = next(m for m in pod_of(obj)["containers"][0]["volumeMounts"] if m["name"] == "storage")
    assert mount["subPath"] == "a/b"


def test_no_storage_anywhere_refuses_to_build_a_pod() -> None:
    with pytest.raises(StorageUnset, match=r"storage\.defaultClaim"):
        manifest(job())


def test_no_storage_fails_the_job_at_once_and_restarts_once_there_is_some() -> None:
    body = job()
    executor = KubeExecutor(body, OperatorConfig(), None, {}, {})  # type: ignore[arg-type]
    out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
    assert out.status["stage"] == "Failed" and out.status["phase"] == "Failed"
    failed = c.get_condition(out.status["conditions"], c.FAILED)
    assert failed is not None and failed["reason"] == "StorageUnset" and failed["observedGeneration"] == 1
    assert "spec.storage is unset" in failed["message"]
    ready = c.get_condition(out.status["conditions"], c.READY)
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "StorageUnset"
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "StorageUnset")]
    assert "server" not in out.status, "nothing is decided before the job has storage"
    # The next tick says nothing new: no event storm.
    again = reconcile({**body, "status": out.status}, nodes=NODES, executor=executor, now=NOW)
    assert again.status["stage"] == "Failed" and again.events == []
    # The admin sets a default claim: the job starts from the top.
    fixed = KubeExecutor(body, OperatorConfig(default_claim="d"), None, {}, {})  # type: ignore[arg-type]
    assert fixed.storage_error(DistillationJobSpec.model_validate(body["spec"])) is None
    resumed = reconcile({**body, "status": out.status}, nodes=NODES, executor=ScriptedExecutor({}), now=NOW)
    assert resumed.status["stage"] != "Failed"
    assert c.get_condition(resumed.status["conditions"], c.FAILED) is None


@pytest.mark.parametrize("uri", ["s3://bucket/prefix", "gs://bucket/prefix", "/data/x"])
def test_storage_uri_is_refused_until_stages_read_object_stores(uri: str) -> None:
    with pytest.raises(ValidationError, match=r"storage\.uri is not supported yet"):
        DistillationJobSpec.model_validate(job(storage={"uri": uri})["spec"])


def test_model_cache_lives_on_the_job_storage_and_training_gets_shared_memory() -> None:
    cfg = OperatorConfig(default_claim="d")
    train = manifest(job(), TRAIN, cfg)
    assert env_of(train)["HF_HOME"] == HF_HOME and HF_HOME.startswith(STORAGE_DIR + "/")
    shm = {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
    assert shm in pod_of(train)["volumes"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in pod_of(train)["containers"][0]["volumeMounts"]
    synth = manifest(job(), SYNTH, cfg)
    assert all(v["name"] != "shm" for v in pod_of(synth)["volumes"])


# --- security --------------------------------------------------------------------------------------


def test_default_security_has_no_fixed_user_and_meets_restricted() -> None:
    pod = pod_of(manifest(job(), cfg=OperatorConfig(default_claim="d")))
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    ctx = pod["containers"][0]["securityContext"]
    assert not {"runAsUser", "runAsGroup"} & set(ctx)
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["runAsNonRoot"] is True


def test_stage_resources_fit_a_16_gib_gpu_node_and_the_chart_replaces_them() -> None:
    def resources(run: StageRun, cfg: OperatorConfig) -> dict[str, Any]:
        found: dict[str, Any] = pod_of(manifest(job(), run, cfg))["containers"][0]["resources"]
        return found

    plain = OperatorConfig(default_claim="d")
    # Built in: a model stage asks for 8Gi (a 16 GiB node, e.g. g4dn.xlarge, can give it) and its GPUs.
    assert resources(TRAIN, plain) == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert resources(SYNTH, plain) == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "4Gi"},
    }
    chart = pod_defaults(
        json.dumps(
            {
                "modelStageResources": {
                    "requests": {"cpu": "4", "memory": "48Gi"},
                    "limits": {"memory": "60Gi"},
                },
                "callStageResources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            }
        )
    )
    cfg = OperatorConfig(default_claim="d", pod_defaults=chart)
    two_gpus = StageRun("train", "stratos.workloads.train", {}, candidate="tiny", node="gpu-1", gpus=2)
    assert resources(two_gpus, cfg) == {
        "requests": {"cpu": "4", "memory": "48Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "60Gi", "nvidia.com/gpu": "2"},
    }
    assert resources(SYNTH, cfg) == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    # The chart's empty maps (its defaults) mean the built-in resources.
    unset = {"requests": {}, "limits": {}}
    empty = pod_defaults(json.dumps({"modelStageResources": unset, "callStageResources": {}}))
    assert resources(TRAIN, OperatorConfig(default_claim="d", pod_defaults=empty)) == resources(TRAIN, plain)


def test_chart_security_contexts_replace_the_defaults() -> None:
    defaults = PodDefaults(
        pod_security_context={"runAsNonRoot": True, "fsGroup": 65532},
        container_security_context={"runAsNonRoot": True, "readOnlyRootFilesystem": True},
    )
    cfg = OperatorConfig(default_claim="d", pod_defaults=defaults)
    for obj in (manifest(job(), cfg=cfg), serving(cfg)):
        pod = pod_of(obj)
        assert pod["securityContext"] == {"runAsNonRoot": True, "fsGroup": 65532}
        assert pod["containers"][0]["securityContext"] == {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
        }


# --- credentials, identity, metadata ---------------------------------------------------------------

CHART_DEFAULTS = {
    "env": [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "REGION", "value": "eu"},
    ],
    "envFrom": [{"secretRef": {"name": "aws-credentials"}}],
    "serviceAccountName": "",
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "batch-low",
    "labels": {"team": "ml", "stratos.io/job": "hijack"},
    "annotations": {"cost-center": "42"},
    "podSecurityContext": None,
}
JOB_PODS = {
    "env": [
        {"name": "REGION", "value": "us"},
        {"name": "HOME", "value": "/elsewhere"},
        {"name": "TEACHER_API_KEY", "value": "hijack"},
    ],
    "envFrom": [{"configMapRef": {"name": "tuning"}, "prefix": "T_"}],
    "serviceAccountName": "trainer",
    "imagePullSecrets": [{"name": "registry"}, {"name": "mine"}],
    "labels": {"team": "nlp"},
}


def cfg_with_chart_defaults() -> OperatorConfig:
    # As the chart passes it: stagePods as JSON, empty strings meaning unset.
    return OperatorConfig(default_claim="d", pod_defaults=pod_defaults(json.dumps(CHART_DEFAULTS)))


def serving(cfg: OperatorConfig, body: dict[str, Any] | None = None) -> dict[str, Any]:
    body = body or job(serving={"engine": "transformers"})
    spec = DistillationJobSpec.model_validate(body["spec"])
    return serving_deployment(
        body,
        spec,
        node="gpu-1",
        gpus=0,
        base_model_uri="/var/lib/stratos/models/tiny",
        adapter_path=None,
        merged_path="/var/lib/stratos/jobs/dj1-u-1/merged",
        model_name="tiny",
        cfg=cfg,
    )


@pytest.mark.parametrize("kind", ["stage", "serving"])
def test_chart_defaults_and_job_options_reach_every_pod(kind: str) -> None:
    cfg = cfg_with_chart_defaults()
    body = job(pods=JOB_PODS, serving={"engine": "transformers"})
    obj = manifest(body, SYNTH, cfg) if kind == "stage" else serving(cfg, body)
    pod, template = pod_of(obj), obj["spec"]["template"]
    env = env_of(obj)
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env["REGION"] == "us", "the job's entry replaces the chart's"
    assert env["HOME"] == "/tmp", "the operator's own variables cannot be replaced"
    names = [e["name"] for e in pod["containers"][0]["env"]]
    assert len(names) == len(set(names))
    if kind == "stage":
        assert env["TEACHER_API_KEY"] == {"secretKeyRef": {"name": "k", "key": "v"}}
    assert pod["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "aws-credentials"}},
        {"prefix": "T_", "configMapRef": {"name": "tuning"}},
    ]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["automountServiceAccountToken"] is False, "identity without an API token"
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "mine"}]
    assert pod["priorityClassName"] == "batch-low"
    labels = template["metadata"]["labels"]
    assert labels["team"] == "nlp" and labels["stratos.io/job"] == "dj1", "the operator's labels win"
    assert template["metadata"]["annotations"]["cost-center"] == "42"


def test_no_options_add_nothing() -> None:
    pod = pod_of(manifest(job(), SYNTH, OperatorConfig(default_claim="d")))
    assert not {"serviceAccountName", "imagePullSecrets", "priorityClassName"} & set(pod)
    assert "envFrom" not in pod["containers"][0]


@pytest.mark.parametrize(
    ("pods", "message"),
    [
        ({"env": [{"name": "STRATOS_STORAGE_DIR", "value": "/x"}]}, "are the operator's own"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env names must be unique"),
        (
            {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            "mutually exclusive",
        ),
        ({"env": [{"name": "A", "valueFrom": {}}]}, "exactly one of secretKeyRef or configMapKeyRef"),
        ({"envFrom": [{"prefix": "X"}]}, "exactly one of secretRef or configMapRef"),
        ({"labels": {"bad key!": "v"}}, "qualified names"),
        ({"serviceAccountName": "Not_A_Name"}, "should match pattern"),
    ],
)
def test_bad_pod_options_are_refused(pods: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DistillationJobSpec.model_validate(job(pods=pods)["spec"])


def test_operator_config_from_the_chart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOS_DEFAULT_CLAIM", "stratos-data")
    monkeypatch.setenv("STRATOS_POD_DEFAULTS", json.dumps(CHART_DEFAULTS))
    cfg = OperatorConfig.from_env()
    assert cfg.default_claim == "stratos-data"
    assert (
        cfg.pod_defaults.service_account_name is None and cfg.pod_defaults.priority_class_name == "batch-low"
    )
    assert [e.name for e in cfg.pod_defaults.env] == ["HF_TOKEN", "REGION"]
    assert cfg.pod_defaults.pod_security_context is None
