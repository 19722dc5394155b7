"""Stratos: a Kubernetes operator that automates LLM knowledge distillation end to end."""

__version__ = "0.1.0"

GROUP = "stratos.io"
VERSION = "v1alpha1"
KIND = "DistillationJob"
PLURAL = "distillationjobs"
SINGULAR = "distillationjob"
SHORT_NAMES = ("dj",)
API_VERSION = f"{GROUP}/{VERSION}"
