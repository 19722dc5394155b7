"""Operator settings, read from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    metrics_port: int = 8080
    reconcile_interval: float = 1.0
    worker_image: str = "ghcr.io/stratos-io/stratos-worker:0.1.0"
    serving_image: str = "ghcr.io/stratos-io/stratos-serving:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    log_format: str = "text"

    @classmethod
    def from_env(cls) -> OperatorConfig:
        env = os.environ
        return cls(
            metrics_port=int(env.get("STRATOS_METRICS_PORT", cls.metrics_port)),
            reconcile_interval=float(env.get("STRATOS_RECONCILE_INTERVAL", cls.reconcile_interval)),
            worker_image=env.get("STRATOS_WORKER_IMAGE", cls.worker_image),
            serving_image=env.get("STRATOS_SERVING_IMAGE", cls.serving_image),
            image_pull_policy=env.get("STRATOS_IMAGE_PULL_POLICY", cls.image_pull_policy),
            log_format=env.get("STRATOS_LOG_FORMAT", cls.log_format),
        )
