"""Task plug-ins: loading, prompting, answer extraction and verification (mahjong, gsm8k, jsonl)."""

from stratos.tasks.base import Sample, Split, Task
from stratos.tasks.registry import build_task, sample_for_probe

__all__ = ["Sample", "Split", "Task", "build_task", "sample_for_probe"]
