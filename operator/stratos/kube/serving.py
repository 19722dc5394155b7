"""The serving Deployment and Service of a DistillationJob, and the endpoint they make.

Pure functions of the job, its spec and the training results. The controller compares what
``desired_serving`` returns with the live objects (``stratos.kube.rollout``) and creates, patches
or deletes, so a change of replicas or resources reaches the endpoint without retraining, and
``enabled: false`` removes it. Names are deterministic (``<job>-serve-<digest of the job's uid>``): a
restarted operator finds its objects instead of duplicating them. Here rather than in ``stratos.serving``
because they are Kubernetes objects like the stage Jobs; the engine command lines they run come from
``stratos.serving.commands``, shared with the local runner.

The pods follow the stage Jobs' rules (``stratos.kube.children``): restricted Pod Security
Standard, read-only root filesystem (``/tmp`` and a cache directory are emptyDirs, ``HOME=/tmp``), no
ServiceAccount token (serving needs no API access), the job's storage mounted read-only, pinned to the
chosen node. Probes all ask ``GET /health``, which both engines answer only once the model is loaded; a
startup probe with a long failure budget covers the load (minutes for a download plus CUDA-graph
capture), so the liveness probe never kills a server that is still loading.

Each object carries a hash of its desired ``spec`` in an annotation: comparing hashes is exact, where
comparing against the live object would always differ in fields the API server defaults.
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratos import GROUP
from stratos.api.placement import ResourceRequirements, gpu_quantity
from stratos.api.spec import DistillationJobSpec
from stratos.api.status import EndpointStatus
from stratos.contracts.runs import STORAGE_DIR
from stratos.kube.children import GPU_RESOURCE, pin_to_node, storage_volume
from stratos.kube.config import OperatorConfig
from stratos.kube.naming import child_labels, child_name, owner_reference, owner_uid
from stratos.kube.podopts import (
    apply_pod_options,
    container_security,
    merge_options,
    pod_security,
    storage_claim,
)
from stratos.serving.commands import (
    HEALTH_PATH,
    SERVING_PORT,
    check_model_name,
    is_local,
    model_location,
    transformers_args,
    vllm_args,
)

STAGE = "serve"
SPEC_HASH = f"{GROUP}/spec-hash"
CACHE_DIR = "/cache"
#: transformers serve runs here and finds the model as the relative directory ``<model name>``.
MODELS_DIR = "/models"

VLLM_DEFAULTS = ResourceRequirements(requests={"cpu": "2", "memory": "8Gi"}, limits={"memory": "32Gi"})
TRANSFORMERS_DEFAULTS = ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "8Gi"})


@dataclass(frozen=True)
class ServingPlan:
    """Everything serving needs: the two objects and how clients reach the student."""

    deployment: dict[str, Any]
    service: dict[str, Any]
    url: str
    model: str
    #: Optional objects asked for in spec.serving (Ingress, HTTPRoute, HPA, PodMonitor), by kind.
    extras: tuple[dict[str, Any], ...] = ()

    def endpoint(self, ready: bool | None = None) -> EndpointStatus:
        return EndpointStatus(url=self.url, model=self.model, ready=ready)


def serving_name(job: str, uid: str) -> str:
    """Name of the Deployment: ``<job>-serve-<digest of the job's uid>`` (``naming.child_name``)."""
    return child_name(job, uid, STAGE)


def service_name(job: str, uid: str) -> str:
    """Name of the Service: the Deployment's, with an ``s`` first when the job's name starts with a
    digit (a Service name is a DNS-1035 label); the digest keeps ``1job`` and ``s1job`` apart."""
    return child_name(job, uid, STAGE, letter_first=True)


def endpoint_url(job: str, uid: str, namespace: str) -> str:
    """In-cluster base URL of the OpenAI-compatible API."""
    return f"http://{service_name(job, uid)}.{namespace}.svc:{SERVING_PORT}/v1"


def merge_resources(defaults: ResourceRequirements, override: ResourceRequirements | None) -> dict[str, Any]:
    """``override`` (spec.serving.resources) over ``defaults``, keeping the result valid.

    A resource the user limits but does not request drops the default request (Kubernetes then
    requests the limit) and vice versa, since a default on the other side could contradict the user's
    value (request above limit). GPUs, an extended resource, get requests equal to limits.
    """
    requests, limits = dict(defaults.requests), dict(defaults.limits)
    if override is not None:
        for name, value in override.limits.items():
            limits[name] = value
            if name not in override.requests:
                requests.pop(name, None)
        for name, value in override.requests.items():
            requests[name] = value
            if name not in override.limits:
                limits.pop(name, None)
    gpu = limits.get(GPU_RESOURCE) or requests.get(GPU_RESOURCE)
    if gpu is not None:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = gpu
    return {"requests": requests, "limits": limits}


def _probe(**timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "timeoutSeconds": 5, **timing}


PROBES = {
    # Up to 15 minutes to download/load the weights before the pod counts as failed.
    "startupProbe": _probe(initialDelaySeconds=10, periodSeconds=10, failureThreshold=90),
    "readinessProbe": _probe(initialDelaySeconds=5, periodSeconds=5, failureThreshold=3),
    # A server busy generating may answer slowly: two minutes of silence before a restart.
    "livenessProbe": _probe(initialDelaySeconds=30, periodSeconds=20, failureThreshold=6),
}


def _gpu_count(resources: dict[str, Any]) -> int:
    """The container's GPUs (limits, else requests), written back as a plain integer in both blocks.

    Quantities are parsed as Kubernetes does ("2000m" and "1.0" are 2 and 1); a fraction is refused.
    """
    raw = resources["limits"].get(GPU_RESOURCE, resources["requests"].get(GPU_RESOURCE, 0))
    count = gpu_quantity(raw)
    if count is None:
        raise ValueError(f"{GPU_RESOURCE} must be a whole number of GPUs, got {raw!r}")
    for block in ("requests", "limits"):
        if GPU_RESOURCE in resources[block]:
            resources[block][GPU_RESOURCE] = str(count)
    return count


def serving_deployment(
    body: Mapping[str, Any],
    spec: DistillationJobSpec,
    *,
    node: str | None,
    gpus: int,
    base_model_uri: str,
    adapter_path: str | None,
    merged_path: str | None,
    model_name: str,
    cfg: OperatorConfig,
    lora_rank: int | None = None,
) -> dict[str, Any]:
    """The serving Deployment (apps/v1) for ``spec.serving.engine``.

    vllm: ``gpus`` GPUs (spec.serving.resources may override), the base model ``base_model_uri`` with the
    adapter at ``adapter_path`` (rank ``lora_rank``, default spec.distillation.lora.rank), or the merged
    weights at ``merged_path`` when given. transformers: the merged weights on CPU (GPUs only when
    spec.serving.resources asks for ``nvidia.com/gpu``; ``gpus`` is not used). Paths are absolute paths
    on the storage volume, as the train stage reports them.
    """
    check_model_name(model_name)
    job, namespace, uid = body["metadata"]["name"], body["metadata"]["namespace"], owner_uid(body)
    serving = spec.serving
    labels = child_labels(job, uid, STAGE)
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HF_HUB_DISABLE_UPDATE_CHECK", "value": "1"},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        storage_volume(spec, cfg),
    ]
    container: dict[str, Any] = {"name": "server", "image": cfg.serving_image}
    if serving.engine == "vllm":
        resources = merge_resources(VLLM_DEFAULTS, serving.resources)
        resources["requests"].setdefault(GPU_RESOURCE, str(gpus))
        resources["limits"].setdefault(GPU_RESOURCE, str(gpus))
        count = _gpu_count(resources)
        if count < 1:
            raise ValueError("the vllm engine needs at least one GPU")
        if merged_path is not None:
            model, adapter = merged_path, None
        else:
            if adapter_path is None:
                raise ValueError("serving needs an adapter path or merged weights")
            model, adapter = model_location(base_model_uri), adapter_path
        rank = lora_rank if lora_rank is not None else spec.distillation.lora.rank
        args = vllm_args(
            model=model,
            model_name=model_name,
            max_model_len=serving.max_model_len,
            adapter_path=adapter,
            lora_rank=rank,
            tensor_parallel=count,
        )
        container |= {"command": ["vllm", "serve"], "args": args}
        if serving.api_key_secret_ref is not None:
            # vLLM reads the key from VLLM_API_KEY (like --api-key) and then requires it on /v1/*;
            # /health and /metrics stay open for the kubelet's probes and Prometheus.
            ref = serving.api_key_secret_ref
            env.append(
                {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            )
        env += [
            {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_DIR}/vllm"},
            {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_DIR}/triton"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        ]
        if is_local(model):
            env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
        mounts += [
            {
                "name": "storage",
                "mountPath": STORAGE_DIR,
                "readOnly": True,
                **_storage_sub_path(spec, cfg, ""),
            },
            {"name": "shm", "mountPath": "/dev/shm"},
        ]
        # NCCL and PyTorch workers exchange tensors through /dev/shm; the runtime default is 64 MiB.
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}})
    else:
        if merged_path is None:
            raise ValueError("transformers serve cannot load a LoRA adapter: train with merged weights")
        resources = merge_resources(TRANSFORMERS_DEFAULTS, serving.resources)
        count = _gpu_count(resources)
        container |= {
            "image": cfg.worker_image,
            "command": ["transformers", "serve"],
            "args": transformers_args(model_name, device="auto" if count else "cpu"),
            "workingDir": MODELS_DIR,
        }
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
        mounts.append(
            {
                "name": "storage",
                "mountPath": f"{MODELS_DIR}/{model_name}",
                "readOnly": True,
                **_storage_sub_path(spec, cfg, merged_path),
            }
        )
    container |= {
        "imagePullPolicy": cfg.image_pull_policy,
        "env": env,
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "resources": resources,
        **copy.deepcopy(PROBES),
        "volumeMounts": mounts,
        "securityContext": container_security(cfg),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": pod_security(cfg),
        "containers": [container],
        "volumes": volumes,
    }
    if node:
        pod_spec.update(pin_to_node(spec, node))
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod_spec}
    apply_pod_options(template, merge_options(cfg.pod_defaults, spec.pods))
    # GPUs on the node are usually all taken by the old pod: surging a new one would leave it Pending.
    surge = {"maxSurge": 0, "maxUnavailable": 1} if count else {"maxSurge": 1, "maxUnavailable": 0}
    deployment_spec: dict[str, Any] = {
        "replicas": serving.replicas,
        "revisionHistoryLimit": 2,
        # Longer than the startup probe's budget: a slow model load is progress, not a stuck rollout.
        "progressDeadlineSeconds": 1800,
        "selector": {"matchLabels": labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": surge},
        "template": template,
    }
    if serving.autoscaling is not None:
        # The HorizontalPodAutoscaler owns the count: leaving replicas out of the spec (and of every
        # patch) keeps the operator from resetting what the autoscaler chose.
        del deployment_spec["replicas"]
    return _object("apps/v1", "Deployment", serving_name(job, uid), namespace, labels, body, deployment_spec)


def serving_service(body: Mapping[str, Any]) -> dict[str, Any]:
    """ClusterIP Service on port 8000 (``http``) selecting the serving pods."""
    job, namespace, uid = body["metadata"]["name"], body["metadata"]["namespace"], owner_uid(body)
    labels = child_labels(job, uid, STAGE)
    spec = {
        "type": "ClusterIP",
        "selector": labels,
        "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    return _object("v1", "Service", service_name(job, uid), namespace, labels, body, spec)


def desired_serving(
    body: Mapping[str, Any],
    spec: DistillationJobSpec,
    *,
    node: str | None,
    gpus: int,
    base_model_uri: str,
    adapter_path: str | None,
    merged_path: str | None,
    model_name: str,
    cfg: OperatorConfig,
    lora_rank: int | None = None,
) -> ServingPlan | None:
    """The objects serving should consist of now; None when ``spec.serving.enabled`` is false.

    None means: delete the Deployment ``serving_name(job, uid)`` and the Service ``service_name(job, uid)`` if
    they exist. Otherwise create what is missing and apply ``stratos.kube.rollout.serving_patch`` to
    what exists.
    """
    if not spec.serving.enabled:
        return None
    deployment = serving_deployment(
        body,
        spec,
        node=node,
        gpus=gpus,
        base_model_uri=base_model_uri,
        adapter_path=adapter_path,
        merged_path=merged_path,
        model_name=model_name,
        cfg=cfg,
        lora_rank=lora_rank,
    )
    job, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    url = endpoint_url(job, owner_uid(body), namespace)
    extras = tuple(m for m in (build(body, spec) for build in EXTRAS.values()) if m is not None)
    return ServingPlan(deployment, serving_service(body), url, model_name, extras)


def spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _object(
    api_version: str,
    kind: str,
    name: str,
    namespace: str,
    labels: dict[str, str],
    body: Mapping[str, Any],
    spec: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {SPEC_HASH: spec_hash(spec)},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": spec,
    }


def _storage_sub_path(spec: DistillationJobSpec, cfg: OperatorConfig, path: str) -> dict[str, str]:
    """``subPath`` that mounts ``path`` (absolute under the storage mount, or "" for all of it)."""
    if path:
        rel = posixpath.relpath(posixpath.normpath(path), STORAGE_DIR)
        if rel == ".." or rel.startswith("../"):
            raise ValueError(f"{path!r} is not on the job's storage ({STORAGE_DIR})")
        rel = "" if rel == "." else rel
    else:
        rel = ""
    claim = storage_claim(spec, cfg)
    base = claim.sub_path if claim is not None else ""
    joined = posixpath.join(base, rel) if base and rel else base or rel
    return {"subPath": joined} if joined else {}


# ---------------------------------------------------------------------------- optional objects


def serving_ingress(body: Mapping[str, Any], spec: DistillationJobSpec) -> dict[str, Any] | None:
    """Ingress routing every path of ``spec.serving.ingress.host`` to the serving Service."""
    ingress = spec.serving.ingress
    if ingress is None:
        return None
    job, namespace, uid = body["metadata"]["name"], body["metadata"]["namespace"], owner_uid(body)
    backend: dict[str, Any] = {"service": {"name": service_name(job, uid), "port": {"name": "http"}}}
    rule = {
        "host": ingress.host,
        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
    }
    ingress_spec: dict[str, Any] = {"rules": [rule]}
    if ingress.class_name:
        ingress_spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        ingress_spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    labels = child_labels(job, uid, STAGE)
    return _object(
        "networking.k8s.io/v1", "Ingress", serving_name(job, uid), namespace, labels, body, ingress_spec
    )


def serving_http_route(body: Mapping[str, Any], spec: DistillationJobSpec) -> dict[str, Any] | None:
    """Gateway API HTTPRoute from the named Gateways to the serving Service."""
    route = spec.serving.http_route
    if route is None:
        return None
    job, namespace, uid = body["metadata"]["name"], body["metadata"]["namespace"], owner_uid(body)
    parents = [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", **p.to_api()} for p in route.parent_refs
    ]
    route_spec: dict[str, Any] = {
        "parentRefs": parents,
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": service_name(job, uid), "port": SERVING_PORT}],
            }
        ],
    }
    if route.hostnames:
        route_spec["hostnames"] = list(route.hostnames)
    labels = child_labels(job, uid, STAGE)
    return _object(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        serving_name(job, uid),
        namespace,
        labels,
        body,
        route_spec,
    )


def serving_autoscaler(body: Mapping[str, Any], spec: DistillationJobSpec) -> dict[str, Any] | None:
    """autoscaling/v2 HorizontalPodAutoscaler of the serving Deployment on CPU utilisation."""
    scaling = spec.serving.autoscaling
    if scaling is None:
        return None
    job, namespace, uid = body["metadata"]["name"], body["metadata"]["namespace"], owner_uid(body)
    hpa_spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": serving_name(job, uid)},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization},
                },
            }
        ],
    }
    labels = child_labels(job, uid, STAGE)
    return _object(
        "autoscaling/v2", "HorizontalPodAutoscaler", serving_name(job, uid), namespace, labels, body, hpa_spec
    )


def serving_pod_monitor(body: Mapping[str, Any], spec: DistillationJobSpec) -> dict[str, Any] | None:
    """Prometheus Operator PodMonitor scraping vLLM's ``/metrics`` on the serving port."""
    if not spec.serving.pod_monitor:
        return None
    job, namespace, uid = body["metadata"]["name"], body["metadata"]["namespace"], owner_uid(body)
    labels = child_labels(job, uid, STAGE)
    monitor_spec = {
        "selector": {"matchLabels": dict(labels)},
        "podMetricsEndpoints": [{"port": "http", "path": METRICS_PATH, "interval": "30s"}],
    }
    return _object(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        serving_name(job, uid),
        namespace,
        labels,
        body,
        monitor_spec,
    )


METRICS_PATH = "/metrics"
#: The optional serving objects by kind, each built from the spec (None: not asked for). Their API
#: path parts (group, version, plural) are in ``EXTRA_APIS``.
EXTRAS = {
    "Ingress": serving_ingress,
    "HTTPRoute": serving_http_route,
    "HorizontalPodAutoscaler": serving_autoscaler,
    "PodMonitor": serving_pod_monitor,
}
EXTRA_APIS = {
    "Ingress": ("networking.k8s.io", "v1", "ingresses"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodMonitor": ("monitoring.coreos.com", "v1", "podmonitors"),
}


def external_url(spec: DistillationJobSpec) -> str | None:
    """Base URL of the API outside the cluster: the Ingress host, else the HTTPRoute's first hostname."""
    serving = spec.serving
    if serving.ingress is not None:
        scheme = "https" if serving.ingress.tls_secret_name else "http"
        return f"{scheme}://{serving.ingress.host}/v1"
    if serving.http_route is not None and serving.http_route.hostnames:
        return f"http://{serving.http_route.hostnames[0]}/v1"
    return None


def endpoint_usage(spec: DistillationJobSpec, url: str, model: str, namespace: str) -> str:
    """How to call the endpoint, for ``status.endpoint.usage``: never the key, only where it is."""
    base = external_url(spec) or url
    text = f'POST {base}/chat/completions with "model": "{model}" (OpenAI chat completions API)'
    ref = spec.serving.api_key_secret_ref
    if ref is not None:
        text += f"; header Authorization: Bearer <key {ref.key} of Secret {namespace}/{ref.name}>"
    else:
        text += "; no API key"
    return text
