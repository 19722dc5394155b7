"""Model loading, trainer builders and helpers for the stage programs that touch model weights.

The stage programs ``student_probe``, ``train`` and ``evaluate`` (``stratos.workloads``) are thin: they
parse a config and call into this package. Everything here needs the worker image's extras (torch,
transformers, peft, trl, datasets), so nothing in the operator imports it; the modules import the heavy
libraries at module level and are imported only by those stage programs and their tests.

- ``models``: resolve a model URI (storage path, ``file://``, ``hf://``), load model + tokenizer with the
  right dtype/device, load and describe LoRA adapters;
- ``generation``: batched greedy generation with a measured decode speed;
- ``data``: the training dataset JSONL in each trainer's format;
- ``trainers``: one builder per algorithm (sft-lora, grpo, dpo, white-box-kd) on trl;
- ``callbacks``: progress lines, the deadline stop, the final checkpoint;
- ``launch``: re-executing a stage under torchrun when several GPUs are visible;
- ``tiny``: tiny random models with a freshly trained tokenizer, for tests and the local example.
"""
