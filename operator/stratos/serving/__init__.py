"""Serving the distilled student behind an OpenAI-compatible endpoint.

- ``commands``: the ``vllm serve`` / ``transformers serve`` command lines (pure), shared by the
  Kubernetes manifests and the local runner so both start the engines the same way;
- ``manifests``: the serving Deployment and Service a DistillationJob owns, and the patch that brings
  live objects to the desired ones when ``spec.serving`` changes (pure);
- ``probe``: latency and decode speed of a running endpoint, through the ``openai`` client;
- ``local``: ``transformers serve`` as a subprocess on localhost, for the embedded local runner.

Nothing here imports torch or transformers: ``local`` starts the engine in another process, so the
operator image (base dependencies only) can import every module.
"""
