"""Generate the DistillationJob CustomResourceDefinition from the pydantic models.

    python -m stratos.api.crdgen --out crds            # writes crds/stratos.io_distillationjobs.yaml
    python -m stratos.api.crdgen --out crds --check    # exits 1 with a diff when the file is stale

The models are the single source of truth; this module only translates pydantic's JSON schema
(draft 2020-12) into the *structural* OpenAPI v3 subset the API server accepts: `$ref`s inlined,
`Optional[X]` turned into plain `X` (a null is pruned by the API server anyway), `const` into `enum`,
numeric exclusive bounds into OpenAPI 3.0 booleans, titles and `default: null` dropped, and
`additionalProperties: false` (pydantic's extra="forbid") dropped because structural schemas forbid
it next to `properties`. Output is sorted and stable, so `--check` can compare text.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from stratos import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from stratos.api.job import DistillationJob
from stratos.api.spec import DistillationJobSpec
from stratos.api.status import DistillationJobStatus
from stratos.api.transitions import transition_rules

FILENAME = f"{GROUP}_{PLURAL}.yaml"
COMMAND = "python -m stratos.api.crdgen --out crds"
HEADER = (
    f"# Generated from the pydantic models in operator/stratos/api by `{COMMAND}`\n"
    "# (`make crds`). Do not edit by hand: change the models and regenerate.\n"
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    # True when serving (or done), Unknown while the pipeline runs, False when failed or suspended.
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Node", "type": "string", "jsonPath": ".status.server.node"},
    {"name": "GPU", "type": "string", "jsonPath": ".status.server.gpu.model"},
    {"name": "Teacher", "type": "string", "jsonPath": ".status.teacher.selected"},
    {"name": "Student", "type": "string", "jsonPath": ".status.student.selected"},
    {"name": "Strategy", "type": "string", "jsonPath": ".status.strategy.selected"},
    {"name": "Accuracy", "type": "number", "jsonPath": ".status.evaluation.accuracy"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.url", "priority": 1},
]

API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer "
    "this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)

# JSON-schema keys that have no place in a CRD schema.
_DROP = ("title", "$defs", "examples", "discriminator")


class SchemaError(ValueError):
    """The models produced something the translation does not know how to make structural."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.removeprefix("#/$defs/")
    if name not in defs:
        raise SchemaError(f"unresolved $ref {ref}")
    # Keys next to the $ref (the field's description, default) win over the referenced model's.
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    return {**copy.deepcopy(defs[name]), **siblings}


def _collapse_optional(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (pydantic's Optional[X]) becomes X with the outer keys merged in."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) == len(options):
        return node  # a real union, e.g. int-or-string; left for the caller to accept or reject
    if len(non_null) != 1:
        raise SchemaError(f"cannot make a structural schema of the union {options}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    if outer.get("default", ...) is None:
        del outer["default"]
    return {**_resolve(non_null[0], defs), **outer}


def to_structural(node: Any, defs: dict[str, Any], *, keep_defaults: bool = True) -> Any:
    """Translate one pydantic JSON-schema node (recursively) into structural OpenAPI v3."""
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(_resolve(node, defs), defs)
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and (value is None or not keep_defaults):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "properties":
            out[key] = {k: to_structural(v, defs, keep_defaults=keep_defaults) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_structural(value, defs, keep_defaults=keep_defaults)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "anyOf":
            if not node.get("x-kubernetes-int-or-string"):
                raise SchemaError(f"unions other than Optional and int-or-string are not structural: {value}")
            out[key] = value
        elif key == "prefixItems":
            raise SchemaError("tuples are not structural; use a list")
        elif key in ("propertyNames", "uniqueItems", "patternProperties"):
            raise SchemaError(f"{key} is not supported in CRD schemas (constrain map keys with CEL instead)")
        else:
            out[key] = value
    if "required" in out:
        out["required"] = sorted(out["required"])
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return out


def _schema_of(model: type[DistillationJobSpec] | type[DistillationJobStatus], *, keep_defaults: bool) -> Any:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, raw.get("$defs", {}), keep_defaults=keep_defaults)


def openapi_schema() -> dict[str, Any]:
    """The version's `openAPIV3Schema`: the root object with apiVersion, kind, metadata, spec, status."""
    fields = DistillationJob.model_fields
    spec = _schema_of(DistillationJobSpec, keep_defaults=True)
    spec["description"] = fields["spec"].description
    # Status carries no defaults: the controller owns every field and writes what it means.
    status = _schema_of(DistillationJobStatus, keep_defaults=False)
    status["description"] = fields["status"].description
    return {
        "description": " ".join(inspect.cleandoc(DistillationJob.__doc__ or "").split()),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": API_VERSION_DESCRIPTION},
            "kind": {"type": "string", "description": KIND_DESCRIPTION},
            # The API server allows nothing else here (it owns ObjectMeta's schema).
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        # Every child carries the job's name as a label value, which Kubernetes limits to 63 characters.
        "x-kubernetes-validations": [
            {
                "rule": "size(self.metadata.name) <= 63",
                "message": "metadata.name must be at most 63 characters: the job's children carry it "
                "as a label",
            },
            *transition_rules(),
        ],
    }


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "stratos", "app.kubernetes.io/part-of": "stratos"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["stratos"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render() -> str:
    """The CRD file's text: header comment plus YAML with sorted keys (stable across runs)."""
    body = yaml.safe_dump(
        build_crd(), sort_keys=True, default_flow_style=False, width=100, allow_unicode=True
    )
    return HEADER + "---\n" + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stratos.api.crdgen", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", action="append", required=True, metavar="DIR", help=f"directory for {FILENAME} (repeatable)"
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 with a diff if a file is stale"
    )
    args = parser.parse_args(argv)
    text = render()
    stale = False
    for directory in args.out:
        path = Path(directory) / FILENAME
        if args.check:
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale = True
                sys.stdout.writelines(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        fromfile=f"{path} (committed)",
                        tofile=f"{path} (generated)",
                    )
                )
                print(f"{path} is stale; regenerate it with `{COMMAND}` (make crds)", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
