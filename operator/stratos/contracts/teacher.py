"""The one description of a teacher connection that stage programs receive.

``TeacherConnection`` is an OpenAI-compatible endpoint as a stage config carries it: name, URL, model,
the environment variable holding its key (filled from a Secret by the kubelet, never in the config),
price and concurrency. The controller builds it from the spec with ``connection`` (which also names the
Secret-backed variable the pod needs); teacher-eval's config is a connection plus its task, and the
synthesize config nests one for the teacher and one for the independent verifier.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field

from stratos.api.spec import EndpointSpec
from stratos.contracts.runs import SecretEnv
from stratos.contracts.stage_io import WorkloadConfig
from stratos.llm.client import DEFAULT_MAX_TOKENS, RetryPolicy, TeacherClient


class TeacherConnection(WorkloadConfig):
    """One OpenAI-compatible endpoint; the key comes from the environment variable ``apiKeyEnv``."""

    name: str = Field("teacher", min_length=1, max_length=63)
    base_url: str = Field(
        alias="baseURL",
        validation_alias=AliasChoices("baseURL", "baseUrl", "base_url"),
        pattern=r"^https?://",
    )
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    cost_per_million_tokens: float = Field(0.0, ge=0)
    max_concurrency: int = Field(8, ge=1, le=256)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    retry_initial_delay: float = Field(1.0, ge=0)
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)

    def client(self) -> TeacherClient:
        return TeacherClient.from_env(
            api_key_env=self.api_key_env,
            name=self.name,
            base_url=self.base_url,
            model=self.model,
            cost_per_million_tokens=self.cost_per_million_tokens,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
            retry=RetryPolicy(max_retries=self.max_retries, initial_delay=self.retry_initial_delay),
        )


def connection(
    name: str, endpoint: EndpointSpec, cost: float, concurrency: int, env: str
) -> tuple[TeacherConnection, tuple[SecretEnv, ...]]:
    """The connection a stage config carries for a spec's endpoint, and the Secret-backed variable
    (``env``, from ``endpoint.apiKeySecretRef``) its pod needs; none when the endpoint has no key."""
    ref = endpoint.api_key_secret_ref
    found = TeacherConnection(
        name=name,
        base_url=endpoint.base_url,
        model=endpoint.model,
        api_key_env=env if ref else None,
        cost_per_million_tokens=cost,
        max_concurrency=concurrency,
    )
    return found, ((SecretEnv(env, ref.name, ref.key),) if ref else ())
