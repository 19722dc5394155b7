"""Pure builders of the Kubernetes objects a DistillationJob owns, and the operator's settings.

- ``naming``: deterministic child names, the labels children are found by, owner references;
- ``children``: a stage run's ConfigMap and batch/v1 Job;
- ``podopts``: the job's storage claim, pod security, and the chart's/job's pod options merged in;
- ``config``: ``OperatorConfig``, the operator's settings read from the environment;
- ``serving``: the serving Deployment, Service and their reach (Ingress/HTTPRoute, HPA, PodMonitor);
- ``rollout``: live versus desired serving objects, the patch and whether the rollout is done;
- ``views``: typed views of stage Jobs, pods and Deployments, and a run's state read from them.

Nothing here calls the API server: the controller's executor creates what these functions return.
"""
