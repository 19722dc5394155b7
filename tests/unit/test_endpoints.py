"""Teacher URLs aimed at link-local or cloud metadata addresses are refused (issue 15, defect 8)."""

from __future__ import annotations

import pytest

from stratos.decide.endpoints import ALLOW_ENV, EndpointPolicy, forbidden_url
from stratos.pipeline.machine import reconcile
from support.jobs import NODES, NOW, ScriptedExecutor, conditions, job

DEFAULT = EndpointPolicy()

METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::a9fe:a9fe]/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://2852039166/",  # 169.254.169.254 as one integer
    "http://0251.0376.0251.0376/",  # octal
    "http://0xa9.0xfe.0xa9.0xfe/",  # hex
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.Google.Internal./",
    "http://100.100.100.200/latest/meta-data/",
    "https://user:pw@169.254.169.254:443/v1",
]
FINE_URLS = [
    "http://teacher:8000/v1",
    "https://api.openai.com/v1",
    "http://127.0.0.1:9/v1",
    "http://10.0.0.5:8000/v1",
    "http://[fd00::1]/v1",
    "http://169.255.0.1/v1",
]


@pytest.mark.parametrize("url", METADATA_URLS)
def test_metadata_and_link_local_urls_are_refused(url: str) -> None:
    assert forbidden_url(url, DEFAULT), url


@pytest.mark.parametrize("url", FINE_URLS)
def test_ordinary_urls_pass(url: str) -> None:
    assert forbidden_url(url, DEFAULT) is None


def test_the_allow_list_permits_networks_and_names() -> None:
    policy = EndpointPolicy.parse(["169.254.169.0/24", " metadata.google.internal ", "", "fd00:ec2::/64"])
    assert forbidden_url("http://169.254.169.254/", policy) is None
    assert forbidden_url("http://2852039166/", policy) is None
    assert forbidden_url("http://169.254.170.2/", policy)  # outside the allowed /24
    assert forbidden_url("http://metadata.google.internal/", policy) is None
    assert forbidden_url("http://[fd00:ec2::254]/", policy) is None


def test_the_job_fails_naming_the_field_and_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    body = job(
        teachers=[
            {"name": "ok", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"}},
            {"name": "imds", "endpoint": {"baseURL": "http://169.254.169.254/latest", "model": "m"}},
        ]
    )
    executor = ScriptedExecutor({})
    out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
    assert executor.started == []  # no stage pod is handed the URL
    assert out.status["phase"] == "Failed"
    failed = conditions(out.status)["Failed"]
    assert failed["reason"] == "TeacherEndpointRefused"
    assert "spec.teachers[1].endpoint.baseURL (teacher imds)" in failed["message"]
    assert "169.254.169.254" in failed["message"] and ALLOW_ENV in failed["message"]
    assert conditions(out.status)["TeacherSelected"]["status"] == "False"

    monkeypatch.setenv(ALLOW_ENV, "169.254.169.254/32")
    executor = ScriptedExecutor({})
    out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
    assert out.status["phase"] != "Failed" and len(executor.started) == 2


def test_a_teacher_url_edited_after_its_evaluation_is_refused_before_synthesis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stratos.contracts.runs import RunStatus
    from support.jobs import ok

    monkeypatch.delenv(ALLOW_ENV, raising=False)
    teacher = {"name": "t", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"}}
    body = job(teachers=[teacher])
    probe = RunStatus("Succeeded", result={"ok": True, "accuracy": 0.5, "samples": 10, "correct": 5})
    executor = ScriptedExecutor({"t": ok(0.9), "tiny": probe})
    for _ in range(4):
        body["status"] = reconcile(body, nodes=NODES, executor=executor, now=NOW).status
        if body["status"]["stage"] == "Synthesize":
            break
    assert body["status"]["stage"] == "Synthesize", body["status"]["stage"]
    teacher["endpoint"]["baseURL"] = "http://[fd00:ec2::254]/v1"
    started = len(executor.started)
    out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
    assert not [r for r in executor.started[started:] if r.stage == "synthesize"]
    failed = conditions(out.status)["Failed"]
    assert failed["reason"] == "TeacherEndpointRefused" and "fd00:ec2::254" in failed["message"]
