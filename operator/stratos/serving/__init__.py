"""Serving the distilled student behind an OpenAI-compatible endpoint.

- ``commands``: the ``vllm serve`` / ``transformers serve`` command lines (pure), shared by the
  Kubernetes objects (``stratos.kube.serving``) and the local runner so both start the engines the
  same way;
- ``probe``: latency and decode speed of a running endpoint, through the ``openai`` client;
- ``local``: ``transformers serve`` as a subprocess on localhost, for the embedded local runner.

Nothing here imports torch or transformers: ``local`` starts the engine in another process, so the
operator image (base dependencies only) can import every module.
"""
