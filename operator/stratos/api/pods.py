"""What a DistillationJob adds to the pods the operator creates for it (stage Jobs and serving).

Credentials reach pods only by reference (``secretKeyRef``, ``envFrom.secretRef``), never as values
copied into the spec, status or a ConfigMap. The chart sets the same options as defaults for every job
(``stagePods`` in values.yaml); ``stratos.kube.podopts`` merges the two, the job's own entries
winning.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from stratos.api.base import ApiModel, CelRule, cel_config, cel_schema
from stratos.api.types import ResourceName, SecretKey

#: An environment variable name as the API server accepts it (C identifier-like, also '-' and '.').
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
#: Prefix of the variables the operator sets itself; a job may not shadow them.
RESERVED_ENV_PREFIX = "STRATOS_"
#: A label key: an optional DNS-subdomain prefix and a name of at most 63 characters. No backslash
#: escapes: the pattern is also embedded in a CEL string literal.
LABEL_KEY_PATTERN = (
    r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

EnvName = Annotated[str, Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]

ONE_KEY_SOURCE = CelRule(
    rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",
    message="exactly one of secretKeyRef or configMapKeyRef must be set",
)
VALUE_OR_VALUE_FROM = CelRule(
    rule="!(has(self.value) && has(self.valueFrom))", message="value and valueFrom are mutually exclusive"
)
NOT_RESERVED = CelRule(
    rule=f"!self.name.startsWith('{RESERVED_ENV_PREFIX}')",
    message=f"variables named {RESERVED_ENV_PREFIX}* are the operator's own",
    field_path=".name",
)
UNIQUE_ENV = CelRule(
    rule="self.all(e, self.exists_one(f, f.name == e.name))", message="env names must be unique"
)
LABEL_KEYS = CelRule(
    rule=f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
    message="keys must be qualified names (an optional DNS prefix and '/', then at most 63 characters)",
)
ONE_REF = CelRule(
    rule="has(self.secretRef) != has(self.configMapRef)",
    message="exactly one of secretRef or configMapRef must be set",
)


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the job's namespace."""

    name: ResourceName = Field(description="Name of the Secret or ConfigMap.")
    key: SecretKey = Field(description="Key inside it.")
    optional: bool | None = Field(None, description="Start the pod even if the object or key is missing.")


class EnvVarSource(ApiModel):
    """Where a variable's value comes from: exactly one of secretKeyRef or configMapKeyRef."""

    model_config = cel_config(ONE_KEY_SOURCE)

    secret_key_ref: KeyRef | None = Field(None, description="A key of a Secret, e.g. HF_TOKEN.")
    config_map_key_ref: KeyRef | None = Field(None, description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        ONE_KEY_SOURCE.check((self.secret_key_ref is None) != (self.config_map_key_ref is None))
        return self


class EnvVar(ApiModel):
    """An environment variable of the job's containers; secrets by reference (valueFrom), never by value."""

    model_config = cel_config(VALUE_OR_VALUE_FROM, NOT_RESERVED)

    name: EnvName = Field(description="Variable name (not STRATOS_*).")
    value: str | None = Field(None, max_length=32768, description="A literal value; not for secrets.")
    value_from: EnvVarSource | None = Field(None, description="A Secret or ConfigMap key.")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        VALUE_OR_VALUE_FROM.check(self.value is None or self.value_from is None)
        NOT_RESERVED.check(not self.name.startswith(RESERVED_ENV_PREFIX), detail=self.name)
        return self


class ObjectRef(ApiModel):
    """A Secret or ConfigMap in the job's namespace."""

    name: ResourceName = Field(description="Its name.")
    optional: bool | None = Field(None, description="Start the pod even if it is missing.")


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as environment variables (e.g. AWS_ACCESS_KEY_ID, ...)."""

    model_config = cel_config(ONE_REF)

    prefix: str | None = Field(None, max_length=253, description="Prepended to every variable name.")
    secret_ref: ObjectRef | None = Field(None, description="A Secret.")
    config_map_ref: ObjectRef | None = Field(None, description="A ConfigMap.")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        ONE_REF.check((self.secret_ref is None) != (self.config_map_ref is None))
        return self


class LocalObjectReference(ApiModel):
    """An object in the job's namespace, by name."""

    name: ResourceName = Field(description="Its name.")


class PodOptions(ApiModel):
    """Added to every pod of the job (stage Jobs, serving Deployment), on top of the chart's defaults."""

    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables, e.g. HF_TOKEN from a Secret; an entry replaces the "
        "chart default of the same name.",
        json_schema_extra=cel_schema(UNIQUE_ENV),
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets/ConfigMaps whose every key becomes a variable (e.g. AWS credentials).",
    )
    service_account_name: ResourceName | None = Field(
        None,
        description="ServiceAccount of the pods (workload identity); its API token is still not mounted.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the worker and serving images."
    )
    priority_class_name: ResourceName | None = Field(None, description="PriorityClass of the pods.")
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra pod labels; the operator's own labels take precedence.",
        json_schema_extra=cel_schema(LABEL_KEYS),
    )
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra pod annotations.",
        json_schema_extra=cel_schema(LABEL_KEYS),
    )

    @field_validator("labels", "annotations")
    @classmethod
    def _qualified_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if len(k) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, k))
        LABEL_KEYS.check(not bad, detail=", ".join(bad))
        return value

    @field_validator("env")
    @classmethod
    def _unique_env(cls, value: list[EnvVar]) -> list[EnvVar]:
        names = [v.name for v in value]
        dups = sorted({n for n in names if names.count(n) > 1})
        UNIQUE_ENV.check(not dups, detail=", ".join(dups))
        return value
