"""Serving users can reach: API key from a Secret, Ingress, HTTPRoute, HPA, PodMonitor, how to call it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from stratos.api.spec import DistillationJobSpec
from stratos.controller.executor import extra_patch, probe
from stratos.kube.config import OperatorConfig
from stratos.kube.serving import (
    SPEC_HASH,
    endpoint_url,
    endpoint_usage,
    external_url,
    service_name,
    serving_name,
)
from support.fake_openai import FakeOpenAI
from support.jobs import job
from support.serving import serving_plan

CFG = OperatorConfig(serving_image="reg/serving:1", worker_image="reg/worker:1", default_claim="data")
KEY_REF = {"name": "llm-key", "key": "token"}


def plan(serving: dict[str, Any]) -> Any:
    return serving_plan(job(serving=serving), CFG)


def extras(serving: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in plan(serving).extras}


def test_plain_serving_has_no_optional_objects_and_keeps_its_replicas() -> None:
    p = plan({"replicas": 2})
    assert p.extras == ()
    assert p.deployment["spec"]["replicas"] == 2


def test_the_api_key_reaches_vllm_by_secret_reference_only() -> None:
    env = plan({"apiKeySecretRef": KEY_REF}).deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    key = next(e for e in env if e["name"] == "VLLM_API_KEY")
    assert key == {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "token"}}}
    assert "VLLM_API_KEY" not in {
        e["name"] for e in plan({}).deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"engine": "transformers", "apiKeySecretRef": KEY_REF}, "apiKeySecretRef needs engine vllm"),
        ({"engine": "transformers", "podMonitor": True}, "podMonitor needs engine vllm"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas must not be greater"),
        ({"ingress": {"host": "Bad_Host"}}, "String should match pattern"),
        ({"httpRoute": {"parentRefs": []}}, "at least 1 item"),
    ],
)
def test_settings_that_cannot_work_are_refused(serving: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DistillationJobSpec.model_validate(job(serving=serving)["spec"])


def test_ingress_routes_the_host_to_the_serving_service_with_tls() -> None:
    ing = extras({"ingress": {"host": "llm.example.com", "className": "nginx", "tlsSecretName": "llm-tls"}})[
        "Ingress"
    ]
    assert ing["apiVersion"] == "networking.k8s.io/v1" and ing["metadata"]["name"] == serving_name(
        "dj1", "u-1"
    )
    assert ing["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "llm.example.com"
    (path,) = rule["http"]["paths"]
    assert path == {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": service_name("dj1", "u-1"), "port": {"name": "http"}}},
    }


def test_http_route_attaches_to_the_gateways_and_targets_the_service_port() -> None:
    route = extras(
        {
            "httpRoute": {
                "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
                "hostnames": ["llm.example.com"],
            }
        }
    )["HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "gateways",
            "sectionName": "https",
        }
    ]
    assert route["spec"]["hostnames"] == ["llm.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": service_name("dj1", "u-1"), "port": 8000}]


def test_autoscaling_hands_the_replica_count_to_the_hpa() -> None:
    p = plan({"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCpuUtilization": 60}})
    assert "replicas" not in p.deployment["spec"]
    (hpa,) = p.extras
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": service_name("dj1", "u-1"),
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }


def test_pod_monitor_scrapes_the_serving_pods_metrics() -> None:
    p = plan({"podMonitor": True})
    (monitor,) = p.extras
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"] == {"matchLabels": p.deployment["spec"]["selector"]["matchLabels"]}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    ports = p.deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert ports[0]["name"] == "http"


def test_status_says_how_to_call_without_the_key() -> None:
    body = job(
        serving={"apiKeySecretRef": KEY_REF, "ingress": {"host": "llm.example.com", "tlsSecretName": "t"}}
    )
    spec = DistillationJobSpec.model_validate(body["spec"])
    assert external_url(spec) == "https://llm.example.com/v1"
    usage = endpoint_usage(spec, endpoint_url("dj1", "u-1", "ns"), "dj1-tiny", "ns")
    assert usage == (
        'POST https://llm.example.com/v1/chat/completions with "model": "dj1-tiny" (OpenAI chat completions '
        "API); header Authorization: Bearer <key token of Secret ns/llm-key>"
    )
    route = DistillationJobSpec.model_validate(
        job(serving={"httpRoute": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.example.com"]}})["spec"]
    )
    assert external_url(route) == "http://a.example.com/v1"
    plain = DistillationJobSpec.model_validate(job()["spec"])
    assert external_url(plain) is None
    assert endpoint_usage(plain, "http://svc:8000/v1", "m", "ns").endswith("; no API key")


def test_optional_objects_are_patched_only_when_their_hash_changes_and_dropped_keys_are_nulled() -> None:
    with_tls = extras({"ingress": {"host": "a.example.com", "tlsSecretName": "t"}})["Ingress"]
    without = extras({"ingress": {"host": "a.example.com"}})["Ingress"]
    assert extra_patch(with_tls, with_tls) is None
    patch = extra_patch(with_tls, without)
    assert patch is not None
    assert patch["spec"]["tls"] is None and patch["spec"]["rules"] == without["spec"]["rules"]
    assert patch["metadata"]["annotations"][SPEC_HASH] == without["metadata"]["annotations"][SPEC_HASH]


def test_the_probe_sends_the_key_and_never_reports_it() -> None:
    secret = "sk-serving-3f9a1c"
    with FakeOpenAI(require_key=secret, model="m") as server:
        assert probe(server.base_url, "m", api_key=secret).ok
        refused = probe(server.base_url, "m", api_key="sk-wrong-77e2b0")
        assert not refused.ok and "401" in refused.error
        assert "sk-wrong-77e2b0" not in refused.error and secret not in json.dumps(refused.__dict__)
