"""How users reach the served model: Ingress or Gateway API HTTPRoute, autoscaling.

Part of ``spec.serving`` (stratos.api.placement.ServingSpec); split out to keep modules small.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from stratos.api.base import ApiModel, CelRule, cel_config
from stratos.api.types import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, ResourceName

#: A host name clients use, optionally with a leading wildcard label (RFC 1123, as Ingress allows).
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]


class IngressSpec(ApiModel):
    """A networking.k8s.io/v1 Ingress routing every path of ``host`` to the serving Service."""

    host: Hostname = Field(description="Host name clients use, e.g. llm.example.com.")
    class_name: ResourceName | None = Field(
        None, description="IngressClass to use; unset: the cluster's default IngressClass."
    )
    tls_secret_name: ResourceName | None = Field(
        None, description="Secret with the TLS certificate for host; set: clients use https."
    )


class ParentReference(ApiModel):
    """A Gateway the route attaches to."""

    name: ResourceName = Field(description="Name of the Gateway.")
    namespace: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Namespace of the Gateway; unset: the job's namespace.",
    )
    section_name: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Listener of the Gateway to attach to; unset: every listener that allows the route.",
    )


class HttpRouteSpec(ApiModel):
    """A Gateway API (gateway.networking.k8s.io/v1) HTTPRoute to the serving Service."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=8, description="Gateways the route attaches to."
    )
    hostnames: list[Hostname] = Field(
        default_factory=list,
        max_length=16,
        description="Host names the route answers; the first is the endpoint's external URL. "
        "Empty: the Gateway's listeners decide.",
    )


MIN_NOT_ABOVE_MAX = CelRule(
    rule="self.minReplicas <= self.maxReplicas",
    message="minReplicas must not be greater than maxReplicas",
    field_path=".minReplicas",
)


class AutoscalingSpec(ApiModel):
    """An autoscaling/v2 HorizontalPodAutoscaler for the serving Deployment.

    With it the autoscaler owns the replica count: ``serving.replicas`` is not applied. Every replica
    runs on the chosen node, so more replicas than that node has GPUs for stay Pending.
    """

    model_config = cel_config(MIN_NOT_ABOVE_MAX)

    min_replicas: int = Field(1, ge=1, le=16, description="Fewest serving replicas.")
    max_replicas: int = Field(ge=1, le=16, description="Most serving replicas.")
    target_cpu_utilization: int = Field(
        80, ge=1, le=100, description="Average CPU utilisation (percent of requests) to scale at."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        MIN_NOT_ABOVE_MAX.check(self.min_replicas <= self.max_replicas)
        return self
