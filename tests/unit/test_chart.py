"""The Helm chart, rendered by the real helm binary and checked object by object.

helm is built from source with the test control plane (tests/controlplane/build.sh); its bin
directory comes from STRATOS_K8S_BIN (set by `make test`) or from build.sh itself
(support.controlplane.resolve_bin_dir). Nothing here
talks to a cluster: tests/integration/test_helm_install.py does that.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.controlplane import ControlPlaneError, resolve_bin_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "stratos"
RELEASE = "stratos"
NAMESPACE = "stratos-system"

# The permissions the operator needs (and no more), as (API group, resource, verb).
NAMESPACED_PERMISSIONS = {
    *(("stratos.io", "distillationjobs", v) for v in ("get", "list", "watch", "patch", "update")),
    *(("stratos.io", "distillationjobs/status", v) for v in ("get", "patch", "update")),
    # Owner references with blockOwnerDeletion need update on the owner's finalizers (OpenShift, OLM).
    ("stratos.io", "distillationjobs/finalizers", "update"),
    *(("", "events", v) for v in ("create", "patch")),
    *(("events.k8s.io", "events", v) for v in ("create", "patch")),
    *(("batch", "jobs", v) for v in ("get", "list", "watch", "create", "delete", "patch")),
    *(("", "pods", v) for v in ("get", "list", "watch", "delete")),
    *(("", "configmaps", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    *(("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    *(("", "services", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    *(("", "persistentvolumeclaims", v) for v in ("get", "list", "watch")),
}
# Kueue Workloads (read) and the optional serving objects; no Secret unless rbac.servingApiKeySecrets.
INTEGRATION_PERMISSIONS = {
    *(("kueue.x-k8s.io", "workloads", v) for v in ("get", "list")),
    *(
        (group, resource, v)
        for group, resource in (
            ("networking.k8s.io", "ingresses"),
            ("gateway.networking.k8s.io", "httproutes"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("monitoring.coreos.com", "podmonitors"),
        )
        for v in ("get", "create", "patch", "delete")
    ),
}
CLUSTER_PERMISSIONS = {
    *(("", "nodes", v) for v in ("get", "list", "watch")),
    # kopf's runtime observation of CRDs (and, in namespaced mode, of namespaces).
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")),
}
KOPF_NAMESPACE_OBSERVATION = {("", "namespaces", "list"), ("", "namespaces", "watch")}
# kopf peering: watch every peering object of the kind, write the keep-alive into the release's own
# (the patch rule names it: resourceNames).
CLUSTER_PEERING = {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")}
NAMESPACED_PEERING = {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watched": {"watchedNamespaces": ["team-a", "team-b"]},
    "monitor-nocrds": {"serviceMonitor": {"enabled": True}, "crds": {"install": False}},
    "debug-digest": {
        "logLevel": "debug",
        "image": {"digest": "sha256:" + "0" * 64},
        "workerImage": {"repository": "registry.local/worker", "tag": "1.2.3"},
    },
    "peering-ha": {"peering": {"enabled": True}, "replicaCount": 3},
    "peering-watched": {"peering": {"enabled": True}, "watchedNamespaces": ["team-a", "team-b"]},
    "everything": {
        "peering": {"enabled": True},
        "replicaCount": 2,
        "commonLabels": {"team": "ml-platform"},
        "logFormat": "json",
        "podDisruptionBudget": {"enabled": True},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
        ],
        "envFrom": [{"configMapRef": {"name": "proxy"}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "ca-bundle"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/extra", "readOnly": True}],
        "crds": {"annotations": {"argocd.argoproj.io/sync-options": "Prune=false"}},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "additionalAlertLabels": {"team": "ml-platform"}},
        "grafanaDashboard": {"enabled": True},
    },
    "storage-credentials": {
        "storage": {"create": True, "size": "20Gi", "storageClassName": "nfs"},
        "stagePods": {
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
            "envFrom": [{"secretRef": {"name": "aws-credentials"}}],
            "serviceAccountName": "trainer",
            "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 65532},
        },
    },
}


@functools.cache
def helm_path() -> str:
    try:
        return str(resolve_bin_dir() / "helm")
    except ControlPlaneError as e:
        pytest.skip(f"no helm binary: {e}")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_path(), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@functools.cache
def _render(values_json: str) -> tuple[dict[str, Any], ...]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
        values_file.write(values_json)
        values_file.flush()
        out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", values_file.name).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    # JSON is YAML: a values file that helm reads exactly as written.
    return list(_render(json.dumps(values or {}, sort_keys=True)))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def permissions(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role.get("rules") or []
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def named_rules(role: dict[str, Any]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """Rules restricted to named objects, as (API group, resource, verb, resourceNames)."""
    return [
        (group, resource, verb, tuple(rule["resourceNames"]))
        for rule in role.get("rules") or []
        if rule.get("resourceNames")
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    ]


USER_ROLE_SUFFIXES = ("-editor", "-viewer")


def operator_cluster_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ClusterRoles bound to the operator (not the editor/viewer roles for users)."""
    return [
        r for r in of_kind(objects, "ClusterRole") if not r["metadata"]["name"].endswith(USER_ROLE_SUFFIXES)
    ]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "operator")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def all_renders() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for name, values in SCENARIOS.items():
        yield name, render(values)


# --- lint and shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict(scenario: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps(SCENARIOS[scenario]))
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_the_expected_objects() -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",  # the editor and viewer roles for users (rbac.userRoles)
            "ClusterRole",
            "ClusterRole",  # the integrations role (Kueue Workloads, serving extras)
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount",
        ]
    )
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "stratos"


def test_operator_command_ports_probes_and_environment() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = operator_container(objects)
    assert container["command"] == [
        "kopf",
        "run",
        "--standalone",
        "--liveness=http://0.0.0.0:8081/healthz",
        "-m",
        "stratos.controller.operator",
    ]
    assert container["args"] == ["--all-namespaces"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = env_of(container)
    app = chart["appVersion"]
    assert env["STRATOS_LOG_LEVEL"] == "info"
    assert env["STRATOS_METRICS_PORT"] == "8080"
    assert env["STRATOS_WORKER_IMAGE"] == f"ghcr.io/stratos-io/stratos-worker:{app}"
    assert env["STRATOS_SERVING_IMAGE"] == f"ghcr.io/stratos-io/stratos-serving:{app}"
    assert env["STRATOS_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["STRATOS_RECONCILE_INTERVAL"] == "1"
    assert env["STRATOS_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["STRATOS_WATCHED_NAMESPACES"] == ""  # all namespaces
    assert "POD_ID" not in env  # kopf's peering identity: only with peering
    assert container["image"] == f"ghcr.io/stratos-io/stratos-operator:{app}"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_default_storage_and_stage_pod_defaults_reach_the_operator() -> None:
    from stratos.kube.config import pod_defaults

    env = env_of(operator_container(render()))
    assert env["STRATOS_DEFAULT_CLAIM"] == ""
    defaults = pod_defaults(env["STRATOS_POD_DEFAULTS"])
    assert defaults.env == [] and defaults.service_account_name is None
    assert defaults.pod_security_context == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    objects = render(SCENARIOS["storage-credentials"])
    env = env_of(operator_container(objects))
    claim = one(objects, "PersistentVolumeClaim")
    assert env["STRATOS_DEFAULT_CLAIM"] == claim["metadata"]["name"] == f"{RELEASE}-data"
    assert claim["spec"]["storageClassName"] == "nfs" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    defaults = pod_defaults(env["STRATOS_POD_DEFAULTS"])
    assert [e.name for e in defaults.env] == ["HF_TOKEN"] and defaults.service_account_name == "trainer"
    assert (
        defaults.env_from[0].secret_ref is not None
        and defaults.env_from[0].secret_ref.name == "aws-credentials"
    )
    # helm merges maps: the chart's seccompProfile stays.
    assert defaults.pod_security_context == {
        "runAsNonRoot": True,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    named = render({"storage": {"defaultClaim": "shared-data"}})
    assert env_of(operator_container(named))["STRATOS_DEFAULT_CLAIM"] == "shared-data"
    assert not of_kind(named, "PersistentVolumeClaim")


def test_log_level_and_image_overrides() -> None:
    objects = render(SCENARIOS["debug-digest"])
    container = operator_container(objects)
    assert container["args"][0] == "--verbose"
    assert container["image"] == "ghcr.io/stratos-io/stratos-operator@sha256:" + "0" * 64
    assert env_of(container)["STRATOS_WORKER_IMAGE"] == "registry.local/worker:1.2.3"
    assert "--quiet" in operator_container(render({"logLevel": "warning"}))["args"]


def test_metrics_service_selects_the_operator_pod() -> None:
    objects = render()
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": 2},
        {"replicaCount": 2, "peering": {"enabled": False}},
        {"peering": {"enabled": True, "name": "Not_A_Name"}},
        {"peering": {"enabled": True, "lifetime": 30}},
        {"image": {"tag": "latest"}},
        {"logLevel": "chatty"},
        {"watchedNamespaces": ["Not_A_Namespace"]},
        {"unknownKey": True},
        {"stagePods": {"podSecurityContext": {"runAsNonRoot": False}}},
        {"securityContext": {"runAsNonRoot": True, "privileged": True}},
        {"storage": {"defaultClaim": "Bad_Name"}},
    ],
    ids=[
        "two-replicas",
        "two-replicas-standalone",
        "peering-name",
        "peering-unknown-key",
        "latest-tag",
        "log-level",
        "namespace-name",
        "unknown-key",
        "stage-pods-as-root",
        "privileged-operator",
        "claim-name",
    ],
)
def test_schema_rejects_bad_values(bad: dict[str, Any], tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps(bad))
    result = helm("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert result.returncode != 0, f"accepted {bad}"


# --- pod security ---------------------------------------------------------------------------------

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _assert_restricted(pod: dict[str, Any], where: str) -> None:
    """The restricted Pod Security Standard (v1.29+), field by field."""
    pod_sc = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert not pod.get(host), f"{where}: {host}"
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds <= ALLOWED_VOLUME_TYPES, f"{where}: volume {volume['name']} is {kinds}"
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    assert containers
    for container in containers:
        sc = container.get("securityContext", {})
        name = f"{where}/{container['name']}"
        assert sc.get("privileged") in (None, False), name
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert sc.get("readOnlyRootFilesystem") is True, name
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
        assert sc.get("runAsUser", pod_sc.get("runAsUser")) != 0, name
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), name
        capabilities = sc.get("capabilities", {})
        assert "ALL" in capabilities.get("drop", []), name
        assert set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}, name
        for port in container.get("ports", []):
            assert "hostPort" not in port, name


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    checked = 0
    for scenario, objects in all_renders():
        for workload in objects:
            template = workload.get("spec", {}).get("template")
            if workload["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and template:
                _assert_restricted(template["spec"], f"{scenario}:{workload['kind']}")
                checked += 1
    assert checked == len(SCENARIOS)


def test_operator_pod_writes_only_to_an_emptydir_at_tmp() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    # No fixed user id (the image's USER 65532 applies; OpenShift's restricted-v2 assigns its own).
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "runAsUser" not in operator_container(objects)["securityContext"]
    mounts = operator_container(objects)["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/tmp"]
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    assert "emptyDir" in volume


# --- RBAC ------------------------------------------------------------------------------------------


def test_rbac_has_no_wildcards_and_no_secrets() -> None:
    for scenario, objects in all_renders():
        for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
            where = f"{scenario}:{role['kind']}/{role['metadata']['name']}"
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), f"{where}: wildcard in {key}"
                assert not rule.get("nonResourceURLs"), where
                if rule.get("resourceNames"):  # only kopf's keep-alive into the release's peering object
                    assert rule["apiGroups"] == ["kopf.dev"] and rule["verbs"] == ["patch"], where
                assert not {"secrets", "serviceaccounts/token"} & set(rule["resources"]), where
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where


def test_all_namespaces_rbac_is_exactly_what_the_operator_needs() -> None:
    objects = render()
    fullname = RELEASE
    roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole")}
    assert permissions(roles[fullname]) == NAMESPACED_PERMISSIONS
    assert permissions(roles[f"{fullname}-cluster"]) == CLUSTER_PERMISSIONS
    assert permissions(roles[f"{fullname}-integrations"]) == INTEGRATION_PERMISSIONS
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
    service_account = one(objects, "ServiceAccount")["metadata"]
    for binding in of_kind(objects, "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] in roles
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account["name"], "namespace": NAMESPACE}
        ]


def test_watched_namespaces_get_a_role_each_and_no_cluster_wide_namespaced_rights() -> None:
    objects = render(SCENARIOS["watched"])
    integrations = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-integrations")]
    assert sorted(r["metadata"]["namespace"] for r in integrations) == ["team-a", "team-b"]
    assert all(permissions(r) == INTEGRATION_PERMISSIONS for r in integrations)
    roles = [r for r in of_kind(objects, "Role") if r not in integrations]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert permissions(role) == NAMESPACED_PERMISSIONS
    bindings = [b for b in of_kind(objects, "RoleBinding") if b["roleRef"]["name"] == RELEASE]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    # Cluster-wide: only nodes and kopf's observation, never the namespaced permissions.
    cluster_roles = operator_cluster_roles(objects)
    assert [r["metadata"]["name"] for r in cluster_roles] == [f"{RELEASE}-cluster"]
    assert permissions(cluster_roles[0]) == CLUSTER_PERMISSIONS | KOPF_NAMESPACE_OBSERVATION
    args = operator_container(objects)["args"]
    assert args == ["--namespace=team-a", "--namespace=team-b"]
    # The operator's own caches of its stage Jobs, pods and Deployments watch the same namespaces.
    assert env_of(operator_container(objects))["STRATOS_WATCHED_NAMESPACES"] == "team-a,team-b"


def test_duplicate_watched_namespaces_render_once() -> None:
    objects = render({"watchedNamespaces": ["team-a", "team-a"]})
    assert len(of_kind(objects, "Role")) == 2  # the operator's and the integrations' Role
    assert operator_container(objects)["args"] == ["--namespace=team-a"]
    assert env_of(operator_container(objects))["STRATOS_WATCHED_NAMESPACES"] == "team-a"


def test_rbac_and_service_account_can_be_left_out() -> None:
    objects = render(
        {"rbac": {"create": False, "userRoles": False}, "serviceAccount": {"create": False, "name": "mine"}}
    )
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"}
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --- kopf peering ----------------------------------------------------------------------------------

PEERING_KINDS = {"ClusterKopfPeering", "KopfPeering"}


def test_peering_is_off_by_default() -> None:
    objects = render()
    assert not {o["kind"] for o in objects} & PEERING_KINDS
    for role in of_kind(objects, "ClusterRole"):
        assert not {group for group, _, _ in permissions(role)} & {"kopf.dev"}


def test_peering_runs_kopf_with_a_priority_per_pod_and_rolling_updates() -> None:
    objects = render(SCENARIOS["peering-ha"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(objects)
    assert container["command"][:2] == ["python", "-c"] and len(container["command"]) == 3
    assert container["args"] == [
        f"--peering={RELEASE}",
        "--liveness=http://0.0.0.0:8081/healthz",
        "-m",
        "stratos.controller.operator",
        "--all-namespaces",
    ]
    assert "--standalone" not in " ".join(container["command"] + container["args"])
    assert env_of(container)["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_priority_wrapper_execs_kopf_run_older_pods_first(tmp_path: Path) -> None:
    """The rendered command, run with a stand-in ``kopf`` that records its arguments: ``kopf run
    --priority=-<start time in µs>`` plus the Deployment's args, so a later pod gets a lower one."""
    container = operator_container(render(SCENARIOS["peering-ha"]))
    fake = tmp_path / "kopf"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, *container["command"][1:], *container["args"]]
    runs = []
    for _ in range(2):
        before = time.time_ns() // 1000
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=60).stdout
        runs.append((before, json.loads(out)))
    priorities = []
    for before, argv in runs:
        assert argv[0] == "run" and argv[2:] == container["args"], argv
        flag, value = argv[1].split("=")
        assert flag == "--priority"
        assert -time.time_ns() // 1000 <= int(value) <= -before
        priorities.append(int(value))
    assert priorities[0] > priorities[1]


def test_peering_all_namespaces_object_and_rbac() -> None:
    objects = render(SCENARIOS["peering-ha"])
    (peering,) = [o for o in objects if o["kind"] in PEERING_KINDS]
    assert peering["apiVersion"] == "kopf.dev/v1" and peering["kind"] == "ClusterKopfPeering"
    assert peering["metadata"]["name"] == RELEASE and "namespace" not in peering["metadata"]
    assert peering["metadata"]["labels"]["app.kubernetes.io/part-of"] == "stratos"
    roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole")}
    assert permissions(roles[RELEASE]) == NAMESPACED_PERMISSIONS
    assert permissions(roles[f"{RELEASE}-cluster"]) == CLUSTER_PERMISSIONS | CLUSTER_PEERING
    assert named_rules(roles[f"{RELEASE}-cluster"]) == [
        ("kopf.dev", "clusterkopfpeerings", "patch", (RELEASE,))
    ]


def test_peering_watched_namespaces_get_a_kopfpeering_each() -> None:
    objects = render(SCENARIOS["peering-watched"])
    peerings = [o for o in objects if o["kind"] in PEERING_KINDS]
    assert sorted((o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in peerings) == [
        ("KopfPeering", "team-a", RELEASE),
        ("KopfPeering", "team-b", RELEASE),
    ]
    for role in (r for r in of_kind(objects, "Role") if not r["metadata"]["name"].endswith("-integrations")):
        assert permissions(role) == NAMESPACED_PERMISSIONS | NAMESPACED_PEERING
        assert named_rules(role) == [("kopf.dev", "kopfpeerings", "patch", (RELEASE,))]
    (cluster_role,) = operator_cluster_roles(objects)
    assert permissions(cluster_role) == CLUSTER_PERMISSIONS | KOPF_NAMESPACE_OBSERVATION
    assert operator_container(objects)["args"][-2:] == ["--namespace=team-a", "--namespace=team-b"]


def test_peering_name_is_used_everywhere() -> None:
    objects = render({"peering": {"enabled": True, "name": "shared.stratos"}})
    (peering,) = [o for o in objects if o["kind"] in PEERING_KINDS]
    assert peering["metadata"]["name"] == "shared.stratos"
    assert "--peering=shared.stratos" in operator_container(objects)["args"]
    cluster_role = next(
        r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-cluster")
    )
    assert named_rules(cluster_role) == [("kopf.dev", "clusterkopfpeerings", "patch", ("shared.stratos",))]


def test_kopf_peering_crds_are_what_kopf_looks_for() -> None:
    """crds/ holds the kopf.dev/v1 ClusterKopfPeering and KopfPeering that kopf's own selectors match."""
    from kopf._cogs.structs import references

    selectors = {"Cluster": references.CLUSTER_PEERINGS_K, "Namespaced": references.NAMESPACED_PEERINGS_K}
    crds = [yaml.safe_load(path.read_text()) for path in sorted((CHART / "crds").glob("*.yaml"))]
    assert sorted(c["spec"]["scope"] for c in crds) == sorted(selectors)
    for crd in crds:
        spec, names = crd["spec"], crd["spec"]["names"]
        (version,) = spec["versions"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["metadata"]["name"] == f"{names['plural']}.{spec['group']}"
        assert names["kind"] == {"Cluster": "ClusterKopfPeering", "Namespaced": "KopfPeering"}[spec["scope"]]
        assert version["served"] is True and version["storage"] is True
        served = references.Resource(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            singular=names["singular"],
            namespaced=spec["scope"] == "Namespaced",
        )
        assert selectors[spec["scope"]].check(served), served
        # Keep-alives go into .status of the object itself (no status subresource), in any shape.
        assert "subresources" not in version
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    # Helm applies crds/ itself, before the templates, and leaves it out of `helm template` output.
    assert len(of_kind(render(SCENARIOS["peering-ha"]), "CustomResourceDefinition")) == 1
    with_crds = helm("template", RELEASE, str(CHART), "--include-crds").stdout
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(with_crds) if d}
    for crd in crds:
        assert ("CustomResourceDefinition", crd["metadata"]["name"]) in kinds


# --- CRD -------------------------------------------------------------------------------------------


def test_chart_crd_copy_is_in_sync_with_crds_dir() -> None:
    """files/crds/ must equal crds/ byte for byte; fix with `cp crds/*.yaml charts/stratos/files/crds/`."""
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copy = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert source, "crds/ holds no CRD (python -m stratos.api.crdgen --out crds)"
    assert sorted(copy) == sorted(source), "run: cp crds/*.yaml charts/stratos/files/crds/"
    stale = [name for name in source if copy[name] != source[name]]
    assert not stale, f"stale chart copy of {stale}: run cp crds/*.yaml charts/stratos/files/crds/"


def test_rendered_crd_is_the_generated_one_plus_helm_metadata() -> None:
    sources = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    rendered = of_kind(render(), "CustomResourceDefinition")
    assert len(rendered) == len(sources)
    by_name = {c["metadata"]["name"]: c for c in rendered}
    for source in sources:
        crd = by_name[source["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "distillationjobs.stratos.io" in by_name


def test_crds_can_be_skipped_or_not_kept() -> None:
    assert not of_kind(render({"crds": {"install": False}}), "CustomResourceDefinition")
    for crd in of_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


# --- ServiceMonitor --------------------------------------------------------------------------------


def test_service_monitor_only_when_enabled() -> None:
    for scenario, objects in all_renders():
        monitors = of_kind(objects, "ServiceMonitor")
        enabled = SCENARIOS[scenario].get("serviceMonitor", {}).get("enabled", False)
        assert len(monitors) == (1 if enabled else 0), scenario


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objects = render({"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}})
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]


def test_service_monitor_needs_the_metrics_service(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        json.dumps({"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}})
    )
    result = helm("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert result.returncode != 0
    assert "metrics.service.enabled" in result.stderr


# --- documentation ---------------------------------------------------------------------------------


@functools.cache
def _values_doc() -> Any:
    """charts/tools/values_doc.py, the generator of the README's values table."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("values_doc", REPO / "charts" / "tools" / "values_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("values_doc", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_readme_values_table_is_generated_from_values_yaml() -> None:
    """Fix with `python charts/tools/values_doc.py charts/stratos`."""
    values_doc = _values_doc()
    readme = (CHART / "README.md").read_text()
    assert values_doc.render_readme(readme, (CHART / "values.yaml").read_text()) == readme, (
        "charts/stratos/README.md is stale: run python charts/tools/values_doc.py charts/stratos"
    )
    assert values_doc.main([str(CHART), "--check"]) == 0


def test_every_value_has_a_description_and_every_leaf_a_row() -> None:
    values_doc = _values_doc()
    text = (CHART / "values.yaml").read_text()
    rows = values_doc.rows(text)
    assert not [r.key for r in rows if not r.description], "values without a '# --' description"
    documented = {r.key for r in rows}

    def leaves(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    for leaf in leaves(yaml.safe_load(text)):
        parts = leaf.split(".")
        assert any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1)), leaf


def test_values_doc_follows_helm_docs_conventions() -> None:
    rows = _values_doc().rows(
        "# -- One\n# two.\na: 1\nb:\n  # -- (duration) Wait.\n  c: 5s\n  d: [x]\n# -- Whole.\ne:\n  f: true\n"
    )
    assert [(r.key, r.type, r.default, r.description) for r in rows] == [
        ("a", "int", "`1`", "One two."),
        ("b.c", "duration", '`"5s"`', "Wait."),
        ("b.d", "list", '`["x"]`', ""),
        ("e", "object", '`{"f":true}`', "Whole."),
    ]


def _schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return _schema_node(schema, schema["definitions"][ref.rsplit("/", 1)[-1]]) if ref else node


def test_values_and_schema_name_the_same_keys() -> None:
    """Every key of values.yaml is in values.schema.json and every schema property in values.yaml,
    down to where the schema stops listing properties (free-form maps such as annotations)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    problems: list[str] = []

    def compare(value: dict[str, Any], node: dict[str, Any], path: str) -> None:
        node = _schema_node(schema, node)
        properties = node.get("properties")
        if properties is None:
            return
        for key in set(value) - set(properties):
            problems.append(f"{path}{key}: in values.yaml, not in the schema")
        for key in set(properties) - set(value) - {"global"}:
            problems.append(f"{path}{key}: in the schema, not in values.yaml")
        for key in set(value) & set(properties):
            # securityContexts are Kubernetes objects: the schema pins only the rules it enforces.
            if isinstance(value[key], dict) and not key.lower().endswith("securitycontext"):
                compare(value[key], properties[key], f"{path}{key}.")

    compare(values, schema, "")
    assert not problems, problems


def test_packaged_chart_carries_the_crd_schema_and_readme(tmp_path: Path) -> None:
    """`helm package` keeps files/crds/ (a symlink would not survive packaging portably)."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("stratos-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for path in ("Chart.yaml", "values.yaml", "values.schema.json", "README.md", "templates/crds.yaml"):
        assert f"stratos/{path}" in names, path
    for crd in (CHART / "crds").glob("*.yaml"):
        assert f"stratos/crds/{crd.name}" in names
    for crd in (REPO / "crds").glob("*.yaml"):
        assert f"stratos/files/crds/{crd.name}" in names


# --- chart polish ----------------------------------------------------------------------------------


def test_common_labels_reach_every_object_and_the_pod() -> None:
    objects = render(SCENARIOS["everything"])
    for obj in objects:
        assert obj["metadata"]["labels"]["team"] == "ml-platform", (obj["kind"], obj["metadata"]["name"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "ml-platform"
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]  # selectors stay immutable


def test_security_contexts_default_to_restricted_and_can_be_changed() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    # No fixed user id by default: the image's USER applies, and OpenShift's restricted-v2 assigns one.
    assert "runAsUser" not in pod["securityContext"] and pod["securityContext"]["runAsNonRoot"] is True
    assert operator_container(render())["securityContext"]["readOnlyRootFilesystem"] is True
    # A cluster that wants fixed ids sets them; a null drops a default key; the rest stays restricted.
    objects = render(
        {
            "podSecurityContext": {"runAsUser": 1000, "fsGroup": 1000, "seccompProfile": None},
            "securityContext": {"runAsUser": 1000},
        }
    )
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"] == 1000
    assert "seccompProfile" not in pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = operator_container(objects)["securityContext"]
    assert container["runAsUser"] == 1000 and container["capabilities"] == {"drop": ["ALL"]}


def test_pod_disruption_budget() -> None:
    assert not of_kind(render(), "PodDisruptionBudget")
    objects = render(SCENARIOS["everything"])
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": one(objects, "Deployment")["spec"]["selector"]["matchLabels"]},
    }
    pdb = one(
        render({"podDisruptionBudget": {"enabled": True, "minAvailable": "50%", "maxUnavailable": ""}}),
        "PodDisruptionBudget",
    )
    assert pdb["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in pdb["spec"]


@pytest.mark.parametrize(
    "pdb", [{"minAvailable": 1, "maxUnavailable": 1}, {"minAvailable": "", "maxUnavailable": ""}]
)
def test_pod_disruption_budget_needs_exactly_one_bound(pdb: dict[str, Any], tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"podDisruptionBudget": {"enabled": True, **pdb}}))
    result = helm("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert result.returncode != 0 and "exactly one of minAvailable and maxUnavailable" in result.stderr


def test_topology_spread_constraints_get_the_selector_labels() -> None:
    objects = render(SCENARIOS["everything"])
    deployment = one(objects, "Deployment")
    (constraint,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert constraint == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    own = {"matchLabels": {"app": "x"}}
    spread = [
        {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": own}
    ]
    pod = one(render({"topologySpreadConstraints": spread}), "Deployment")["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == spread


def test_env_from_and_extra_volumes() -> None:
    objects = render(SCENARIOS["everything"])
    container = operator_container(objects)
    assert container["envFrom"] == [{"configMapRef": {"name": "proxy"}}]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp", "/etc/ssl/extra"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "ca", "configMap": {"name": "ca-bundle"}} in pod["volumes"]
    assert "envFrom" not in operator_container(render())


def test_json_logs_for_kopf_and_the_stage_programs() -> None:
    container = operator_container(render(SCENARIOS["everything"]))
    assert "--log-format=json" in container["args"]
    assert env_of(container)["STRATOS_LOG_FORMAT"] == "json"
    default = operator_container(render())
    assert not [a for a in default["args"] if a.startswith("--log-format")]
    assert env_of(default)["STRATOS_LOG_FORMAT"] == "text"


def test_crd_annotations() -> None:
    (crd,) = of_kind(render(SCENARIOS["everything"]), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (crd,) = of_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]


def test_editor_and_viewer_roles_aggregate_to_the_built_in_roles() -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind(render(), "ClusterRole")}
    editor, viewer = roles[f"{RELEASE}-editor"], roles[f"{RELEASE}-viewer"]
    assert {k: v for k, v in editor["metadata"]["labels"].items() if k.startswith("rbac.")} == {
        "rbac.authorization.k8s.io/aggregate-to-admin": "true",
        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
    }
    assert {k: v for k, v in viewer["metadata"]["labels"].items() if k.startswith("rbac.")} == {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"
    }
    write = ("create", "update", "patch", "delete", "deletecollection")
    read = ("get", "list", "watch")
    assert permissions(editor) == {
        *(("stratos.io", "distillationjobs", v) for v in read + write),
        *(("stratos.io", "distillationjobs/status", v) for v in read),
    }
    assert permissions(viewer) == {
        ("stratos.io", resource, v)
        for resource in ("distillationjobs", "distillationjobs/status")
        for v in read
    }
    # Nobody bound to them may write status (the operator's) or touch anything else.
    bindings = of_kind(render(), "ClusterRoleBinding")
    assert not [b for b in bindings if b["roleRef"]["name"] in (f"{RELEASE}-editor", f"{RELEASE}-viewer")]
    assert not [
        r
        for r in of_kind(render({"rbac": {"userRoles": False}}), "ClusterRole")
        if r["metadata"]["name"].endswith(USER_ROLE_SUFFIXES)
    ]


def test_serving_api_key_secrets_are_readable_by_name_only_when_listed() -> None:
    for values in ({}, {"watchedNamespaces": ["team-a"]}):
        objects = render({**values, "rbac": {"servingApiKeySecrets": ["llm-key", "other-key"]}})
        (role,) = [
            r
            for r in of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
            if r["metadata"]["name"].endswith("-integrations")
        ]
        secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
        assert secret_rules == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["llm-key", "other-key"],
                "verbs": ["get"],
            }
        ]
