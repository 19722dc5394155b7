"""The serving plan the operator would build for a job, with the fixed stage outputs tests use."""

from __future__ import annotations

from typing import Any

from stratos.api.spec import DistillationJobSpec
from stratos.kube.config import OperatorConfig
from stratos.kube.serving import ServingPlan, desired_serving


def serving_plan(body: dict[str, Any], cfg: OperatorConfig) -> ServingPlan:
    """The plan for ``body`` on node gpu-1 with one GPU, an adapter on storage and no merged model."""
    spec = DistillationJobSpec.model_validate(body["spec"])
    found = desired_serving(
        body,
        spec,
        node="gpu-1",
        gpus=1,
        base_model_uri="file:///m/base",
        adapter_path="/var/lib/stratos/jobs/a/adapter",
        merged_path=None,
        model_name=f"{body['metadata']['name']}-tiny",
        cfg=cfg,
    )
    assert found is not None, "the job asks for no serving"
    return found
