"""Constrained scalar types shared by the spec models.

Every pattern here is plain RE2 (no look-around), so pydantic (Rust regex) and the API server (Go
regexp) accept exactly the same strings. Every string has a maximum length: the API server's CEL
cost estimator needs bounds, and a 10 MB "name" is never intended.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from stratos.api.base import CelRule, cel_schema
from stratos.api.durations import DURATION_MAX_LENGTH, DURATION_PATTERN, parse_duration

#: Longest candidate (teacher/student) name: it ends up inside Job, Pod and label names (<= 63).
NAME_MAX_LENGTH = 40
#: Longest URI or URL anywhere in the spec.
URI_MAX_LENGTH = 2048

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
#: Dataset URIs: an absolute path on the storage volume, file://, s3://, hf://, configmap://NAME/KEY.
DATASET_URI_PATTERN = (
    r"^(/[^\s]*|(file|s3|hf)://[^\s]+|configmap://[a-z0-9]([-.a-z0-9]*[a-z0-9])?/[-._a-zA-Z0-9]+)$"
)
#: Model URIs: hf://ORG/NAME, an absolute path, file://, s3:// or pkg://DIST/FILE (a file an installed
#: Python distribution ships, such as a GGUF model).
MODEL_URI_PATTERN = r"^(/[^\s]*|(file|s3|hf|pkg)://[^\s]+)$"
#: Storage URIs: an object-store prefix (s3://, gs://) or a local directory (file://, /abs/path).
STORAGE_URI_PATTERN = r"^(/[^\s]*|(file|s3|gs)://[^\s]+)$"
#: Kubernetes resource quantity (k8s.io/apimachinery/pkg/api/resource), e.g. 500m, 4Gi, 1.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

DURATION_FORMAT = CelRule(
    rule=f"self.matches('{DURATION_PATTERN}')",
    message="must be a duration such as 90m, 2h, 1h30m or 3600s (units d, h, m, s)",
)
POSITIVE_DURATION = CelRule(
    rule="self.matches('[1-9]')",
    message="duration must be greater than zero",
)

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=DNS_LABEL_PATTERN)]
"""A teacher or student name: a DNS-1123 label of at most 40 characters."""

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
"""The name of a Kubernetes object (Secret, PersistentVolumeClaim): a DNS-1123 subdomain."""

SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)]
"""A key inside a Secret or ConfigMap."""

HttpUrl = Annotated[str, Field(max_length=URI_MAX_LENGTH, pattern=HTTP_URL_PATTERN)]
DatasetUri = Annotated[str, Field(max_length=URI_MAX_LENGTH, pattern=DATASET_URI_PATTERN)]
ModelUri = Annotated[str, Field(max_length=URI_MAX_LENGTH, pattern=MODEL_URI_PATTERN)]
StorageUri = Annotated[str, Field(max_length=URI_MAX_LENGTH, pattern=STORAGE_URI_PATTERN)]


def _positive_duration(value: str) -> str:
    if parse_duration(value) <= 0:  # parse_duration raises on a malformed value
        raise ValueError(POSITIVE_DURATION.message)
    return value


Duration = Annotated[
    str,
    # The format is a CEL rule rather than a `pattern`, for a message people can act on.
    Field(max_length=DURATION_MAX_LENGTH, json_schema_extra=cel_schema(DURATION_FORMAT, POSITIVE_DURATION)),
    AfterValidator(_positive_duration),
]
"""A positive duration such as 90m, 2h, 1h30m or 3600s (see stratos.api.durations)."""

_QUANTITY = re.compile(QUANTITY_PATTERN)


def _quantity(value: Any) -> Any:
    """Accept `cpu: 2` as well as `cpu: "2"` (YAML users write both), keep it as the string form."""
    if isinstance(value, bool):
        return value  # let pydantic reject it: True is not a quantity
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str) and not _QUANTITY.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity, written as a number or a string (500m, 2, 4Gi)."""
