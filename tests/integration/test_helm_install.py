"""The Helm chart installed on the real test control plane.

`helm install` must succeed in a namespace that enforces the restricted Pod Security Standard, the
objects must exist, and the API server's own RBAC must give the chart's ServiceAccount exactly the
rights the operator needs: `kubectl auth can-i --as=system:serviceaccount:NS:NAME` answers for it.
There is no kubelet, so the operator pod never runs; nothing here waits for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.controlplane import CommandError, ControlPlane, rest, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "stratos"


def release_name(namespace: str) -> str:
    # Cluster-scoped objects (ClusterRoles, bindings) carry the release name: one per test namespace.
    return f"stratos-{namespace.rsplit('-', 1)[-1]}"


@contextmanager
def installed(control_plane: ControlPlane, namespace: str, *values: str) -> Iterator[str]:
    """helm install with crds.install=false, yielding helm's output.

    The CRD is cluster-scoped and shared by the whole session (the crd_installed fixture applies
    crds/ with kubectl); a release that installed it too could not be followed by another one.
    `kubectl auth can-i` answers "no" for a resource the server does not know, so the RBAC tests
    need crd_installed; test_chart_crd_is_accepted_by_the_api_server checks the chart's copy.
    """
    release = release_name(namespace)
    args = ["install", release, str(CHART), "--namespace", namespace, "--set", "crds.install=false"]
    for value in values:
        args += ["--set", value]
    result = control_plane.helm(*args)
    try:
        yield result.stdout + result.stderr
    finally:
        control_plane.helm("uninstall", release, "--namespace", namespace, check=False)


def can_i(control_plane: ControlPlane, sa: str, verb: str, resource: str, *args: str) -> bool:
    result = control_plane.kubectl("auth", "can-i", verb, resource, f"--as={sa}", *args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def test_install_into_restricted_namespace(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl(
        "label", "namespace", namespace, "--overwrite", "pod-security.kubernetes.io/warn=restricted"
    )
    release = release_name(namespace)
    with installed(control_plane, namespace) as output:
        # The API server warns at Deployment creation when its pod template would violate the level.
        assert "PodSecurity" not in output, output
        status = json.loads(control_plane.helm("status", release, "-n", namespace, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed"

        for kind, name in [
            ("deployment", release),
            ("serviceaccount", release),
            ("service", f"{release}-metrics"),
        ]:
            control_plane.kubectl("get", kind, name, "-n", namespace)
        for kind, name in [
            ("clusterrole", release),
            ("clusterrole", f"{release}-cluster"),
            ("clusterrolebinding", release),
            ("clusterrolebinding", f"{release}-cluster"),
        ]:
            control_plane.kubectl("get", kind, name)

        # The operator's pod template is admitted by PodSecurity "restricted" (server-side dry run).
        deployment = json.loads(
            control_plane.kubectl("get", "deployment", release, "-n", namespace, "-o", "json").stdout
        )
        template = deployment["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-template"}, **template}
        pod["metadata"] = {"name": "operator-template", "labels": template["metadata"]["labels"]}
        control_plane.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod))
        # ... while the same pod with one restricted field undone is refused: the check has teeth.
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        with pytest.raises(CommandError) as refused:
            control_plane.kubectl(
                "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod)
            )
        assert "PodSecurity" in refused.value.stderr

        if control_plane.with_controller_manager:
            # The ReplicaSet controller's pod passed the same admission for real (it stays Pending).
            selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
            wait_for(
                lambda: json.loads(
                    control_plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
                )["items"],
                timeout=60,
                what="the operator pod created by its ReplicaSet",
            )


def test_service_account_rights_cluster_wide(
    control_plane: ControlPlane, namespace: str, crd_installed: Path
) -> None:
    release = release_name(namespace)
    sa = f"system:serviceaccount:{namespace}:{release}"
    with installed(control_plane, namespace):
        ns = ["-n", namespace]
        assert can_i(control_plane, sa, "patch", "distillationjobs.stratos.io", "--subresource=status", *ns)
        assert can_i(control_plane, sa, "watch", "distillationjobs.stratos.io", "--all-namespaces")
        assert can_i(control_plane, sa, "create", "jobs.batch", *ns)
        assert can_i(control_plane, sa, "create", "jobs.batch", "-n", "default")
        assert can_i(control_plane, sa, "delete", "pods", *ns)
        assert can_i(control_plane, sa, "create", "events", *ns)
        assert can_i(control_plane, sa, "create", "events.events.k8s.io", *ns)
        assert can_i(control_plane, sa, "create", "deployments.apps", *ns)
        assert can_i(control_plane, sa, "list", "nodes")

        assert not can_i(control_plane, sa, "get", "secrets", *ns)
        assert not can_i(control_plane, sa, "list", "secrets", "--all-namespaces")
        assert not can_i(control_plane, sa, "delete", "nodes")
        assert not can_i(control_plane, sa, "patch", "nodes")
        assert not can_i(control_plane, sa, "create", "pods", *ns)
        assert not can_i(control_plane, sa, "delete", "distillationjobs.stratos.io", *ns)
        assert not can_i(control_plane, sa, "create", "clusterroles.rbac.authorization.k8s.io")
        assert not can_i(control_plane, sa, "delete", "persistentvolumeclaims", *ns)

        # The same answers with the ServiceAccount's own token instead of impersonation.
        kubeconfig = control_plane.kubeconfig_for_service_account(namespace, release)
        control_plane.kubectl("get", "nodes", kubeconfig=kubeconfig)
        forbidden = control_plane.kubectl("get", "secrets", *ns, kubeconfig=kubeconfig, check=False)
        assert forbidden.returncode != 0 and "forbidden" in forbidden.stderr.lower()


@pytest.fixture
def watched_namespace(control_plane: ControlPlane, namespace: str, api: Any) -> Iterator[str]:
    """A second namespace, for the operator installed in ``namespace`` to watch."""
    name = f"{namespace}-w"
    rest(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    try:
        yield name
    finally:
        rest(api, "DELETE", f"/api/v1/namespaces/{name}", body={"propagationPolicy": "Background"})


def test_service_account_rights_with_watched_namespaces(
    control_plane: ControlPlane, namespace: str, watched_namespace: str, crd_installed: Path
) -> None:
    release = release_name(namespace)
    sa = f"system:serviceaccount:{namespace}:{release}"
    with installed(control_plane, namespace, f"watchedNamespaces={{{watched_namespace}}}"):
        control_plane.kubectl("get", "role", release, "-n", watched_namespace)
        control_plane.kubectl("get", "rolebinding", release, "-n", watched_namespace)
        watched = ["-n", watched_namespace]
        assert can_i(
            control_plane, sa, "patch", "distillationjobs.stratos.io", "--subresource=status", *watched
        )
        assert can_i(control_plane, sa, "create", "jobs.batch", *watched)
        assert can_i(control_plane, sa, "list", "nodes")
        assert can_i(control_plane, sa, "watch", "namespaces")
        # Nothing namespaced outside the watched namespace, not even in the operator's own.
        assert not can_i(control_plane, sa, "create", "jobs.batch", "-n", namespace)
        assert not can_i(control_plane, sa, "list", "distillationjobs.stratos.io", "--all-namespaces")
        assert not can_i(control_plane, sa, "get", "secrets", *watched)
        assert not can_i(control_plane, sa, "delete", "nodes")


def test_chart_crd_is_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    """The CRD as the chart renders it (generated schema plus Helm metadata) passes server validation."""
    rendered = control_plane.helm(
        "template", "stratos", str(CHART), "--show-only", "templates/crds.yaml"
    ).stdout
    crds = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert [c["metadata"]["name"] for c in crds] == ["distillationjobs.stratos.io"]
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=rendered
    )


def test_editor_and_viewer_roles_reach_users_of_edit_and_view(
    control_plane: ControlPlane, namespace: str, crd_installed: Path, api: Any
) -> None:
    """The controller manager aggregates the chart's editor/viewer ClusterRoles into the built-in
    edit/view roles: a user bound to edit in a namespace manages its DistillationJobs, one bound to view
    reads them, neither writes status (the operator's)."""
    ns = ["-n", namespace]
    for user, role in (("alice", "edit"), ("bob", "view")):
        rest(
            api,
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            body={
                "metadata": {"name": f"{user}-{role}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            },
        )
    if not control_plane.with_controller_manager:
        pytest.skip("role aggregation is the controller manager's")
    with installed(control_plane, namespace):
        wait_for(
            lambda: can_i(control_plane, "alice", "create", "distillationjobs.stratos.io", *ns),
            timeout=60,
            what="edit to aggregate the editor role",
        )
        wait_for(
            lambda: can_i(control_plane, "bob", "list", "distillationjobs.stratos.io", *ns),
            timeout=60,
            what="view to aggregate the viewer role",
        )
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"):
            assert can_i(control_plane, "alice", verb, "distillationjobs.stratos.io", *ns), verb
        for verb in ("get", "list", "watch"):
            assert can_i(control_plane, "bob", verb, "distillationjobs.stratos.io", *ns), verb
        for verb in ("create", "patch", "delete"):
            assert not can_i(control_plane, "bob", verb, "distillationjobs.stratos.io", *ns), verb
        for user in ("alice", "bob"):
            assert not can_i(
                control_plane, user, "patch", "distillationjobs.stratos.io", "--subresource=status", *ns
            )
            assert not can_i(control_plane, user, "list", "distillationjobs.stratos.io", "-n", "default")
    # Uninstalled: the aggregated rules go with the roles.
    wait_for(
        lambda: not can_i(control_plane, "alice", "create", "distillationjobs.stratos.io", *ns),
        timeout=60,
        what="edit to drop the editor role's rules",
    )


def test_install_with_the_operational_values(control_plane: ControlPlane, namespace: str) -> None:
    """PodDisruptionBudget, spread constraints, extra volumes, envFrom, common labels, JSON logs and the
    dashboard ConfigMap, accepted by the API server, the pod still admitted as restricted."""
    control_plane.kubectl(
        "label", "namespace", namespace, "--overwrite", "pod-security.kubernetes.io/warn=restricted"
    )
    release = release_name(namespace)
    values = [
        "peering.enabled=true",
        "replicaCount=2",
        "commonLabels.team=ml-platform",
        "logFormat=json",
        "podDisruptionBudget.enabled=true",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "envFrom[0].configMapRef.name=proxy",
        "envFrom[0].configMapRef.optional=true",
        "extraVolumes[0].name=ca",
        "extraVolumes[0].configMap.name=ca-bundle",
        "extraVolumes[0].configMap.optional=true",
        "extraVolumeMounts[0].name=ca",
        "extraVolumeMounts[0].mountPath=/etc/ssl/extra",
        "grafanaDashboard.enabled=true",
    ]
    with installed(control_plane, namespace, *values) as output:
        assert "PodSecurity" not in output, output
        pdb = json.loads(control_plane.kubectl("get", "pdb", release, "-n", namespace, "-o", "json").stdout)
        assert pdb["spec"]["maxUnavailable"] == 1 and pdb["metadata"]["labels"]["team"] == "ml-platform"
        dashboard = json.loads(
            control_plane.kubectl(
                "get", "configmap", f"{release}-dashboard", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert (
            json.loads(dashboard["data"]["stratos-distillationjobs.json"])["uid"]
            == "stratos-distillationjobs"
        )
        deployment = json.loads(
            control_plane.kubectl("get", "deployment", release, "-n", namespace, "-o", "json").stdout
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "--log-format=json" in container["args"]
        assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["labelSelector"]
