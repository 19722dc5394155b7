"""Stages Deploy, Serving and Succeeded: the distilled student behind an OpenAI-compatible endpoint.

Deploy creates the endpoint (a Deployment and a Service in the cluster, a local process in
``stratos run``) on the chosen node and waits until it answers; one short probe then measures latency
and tokens/s. Serving keeps the endpoint matching ``spec.serving`` (replicas, resources, engine) on
every tick, without retraining; ``serving.enabled: false`` removes it and the job rests in Succeeded,
from where enabling serving again deploys the same trained student.
"""

from __future__ import annotations

from stratos.api.status import CostStatus, EndpointStatus, EvaluationStatus
from stratos.contracts.runs import EndpointRequest, EndpointState
from stratos.decide import budget
from stratos.kube.serving import endpoint_usage, external_url
from stratos.pipeline import conditions as c
from stratos.pipeline.context import Context, Event, SpecProblem, fail, need, refuse_over_budget
from stratos.pipeline.stage_distill import current_student
from stratos.pipeline.stages import Stage


def endpoint_request(ctx: Context) -> EndpointRequest:
    student = current_student(ctx)
    training, server = need(ctx.training, "status.training"), ctx.chosen_server()
    engine = ctx.spec.serving.engine
    return EndpointRequest(
        model_name=f"{ctx.name}-{student.name}",
        engine=engine,
        base_model_uri=student.model.uri,
        adapter_path=training.adapter_uri,
        merged_path=training.merged_uri,
        node=server.node,
        gpus=1 if engine == "vllm" else 0,
    )


def _ensure(ctx: Context) -> tuple[EndpointRequest, EndpointState] | None:
    """The endpoint asked for and its state; None when the executor serves nothing (a plan)."""
    request = endpoint_request(ctx)
    try:
        state = ctx.executor.ensure_endpoint(request, ctx.spec)
    except ValueError as err:  # the serving plan refuses what the spec asks for (engine, resources)
        raise SpecProblem(f"cannot serve {request.model_name} with spec.serving: {err}") from err
    return None if state is None else (request, state)


def _usage(ctx: Context, url: str, model: str) -> str:
    namespace = str(ctx.body["metadata"].get("namespace") or "default")
    return endpoint_usage(ctx.spec, url, model, namespace)


def _how_to_call(ctx: Context, url: str, model: str) -> dict[str, str | None]:
    return {"external_url": external_url(ctx.spec), "usage": _usage(ctx, url, model)}


def charge_serving(ctx: Context, *, final: bool = False) -> None:
    """Charge the serving node's time as it passes (the chosen node's hourly cost x the time since the
    endpoint was asked for), in steps of ``budget.SERVING_CHARGE_SECONDS``; ``final``: the endpoint goes
    away, charge the rest. Spend that passes the budget while serving is announced once (BudgetExceeded):
    the endpoint is not taken down by the budget, an edit of the spec decides."""
    if ctx.status.cost is None:
        ctx.status.cost = CostStatus.read({})
    since = ctx.status.cost.serving_charged_until
    if since is None:
        if not final:
            ctx.status.cost.serving_charged_until = c.now_rfc3339(ctx.now)
        return
    seconds = budget.serving_charge(c.parse_rfc3339(since), ctx.now, final=final)
    if not seconds and not final:
        return
    before = ctx.spent_usd
    ctx.charge(
        "serving",
        usd=budget.node_usd(seconds, ctx.chosen_server().hourly_cost),
        node_seconds=seconds,
    )
    cost = need(ctx.status.cost, "status.cost")
    cost.serving_charged_until = None if final else c.now_rfc3339(ctx.now)
    limit, after = ctx.spec.requirements.budget, ctx.spent_usd
    if limit is not None and budget.crossed(limit, before, after):
        message = (
            f"serving has taken the spend to {after:.4f} USD, above the budget of {limit:.4f} USD; the "
            "endpoint keeps serving (raise spec.requirements.budget, or set spec.serving.enabled: false to "
            "stop it)"
        )
        ctx.events.append(Event("Warning", "BudgetExceeded", message))


def deploy_step(ctx: Context) -> Stage | None:
    if not ctx.spec.serving.enabled:
        return Stage.SUCCEEDED
    estimate = budget.serving(
        expected_hours=ctx.spec.serving.expected_hours, hourly_cost=ctx.chosen_server().hourly_cost
    )
    if (over := refuse_over_budget(ctx, estimate, c.READY)) is not None:
        return over
    ensured = _ensure(ctx)
    if ensured is None:
        ctx.condition(c.READY, c.UNKNOWN, "Deploying", "no executor: the endpoint cannot be created here")
        return None
    charge_serving(ctx)
    request, state = ensured
    if state.state == "Failed":
        charge_serving(ctx, final=True)
        ctx.condition(c.READY, c.FALSE, "DeploymentFailed", state.message, event="Warning")
        return fail(ctx, "DeploymentFailed", state.message)
    if state.state != "Ready" or state.url is None:
        ctx.status.endpoint = EndpointStatus(model=request.model_name, engine=request.engine, ready=False)
        ctx.condition(c.READY, c.UNKNOWN, "Deploying", state.message or "waiting for the endpoint")
        return None
    probe = ctx.executor.probe_endpoint(state.url, request.model_name)
    ctx.status.endpoint = EndpointStatus(
        url=state.url,
        model=request.model_name,
        engine=request.engine,
        ready=True,
        latency_ms=round(probe.latency_ms, 1) if probe.latency_ms is not None else None,
        tokens_per_second=round(probe.tokens_per_second, 1) if probe.tokens_per_second is not None else None,
        **_how_to_call(ctx, state.url, request.model_name),
    )
    measured = (
        f"{probe.latency_ms:.0f} ms, {probe.tokens_per_second:.1f} tokens/s"
        if probe.ok and probe.latency_ms is not None and probe.tokens_per_second is not None
        else f"probe failed: {probe.error}"
    )
    message = f"{request.model_name} is served at {state.url} ({request.engine}; {measured})"
    ctx.condition(c.READY, c.TRUE, "Serving", message, event="Normal")
    return Stage.SERVING


def serving_step(ctx: Context) -> Stage | None:
    if not ctx.spec.serving.enabled:
        ctx.executor.remove_endpoint()
        charge_serving(ctx, final=True)
        ctx.status.endpoint = None
        ctx.events.append(
            Event("Normal", "EndpointRemoved", "spec.serving.enabled is false: endpoint removed")
        )
        return Stage.SUCCEEDED
    ensured = _ensure(ctx)
    if ensured is None:
        return None
    request, state = ensured
    charge_serving(ctx)
    if ctx.status.endpoint is None:
        ctx.status.endpoint = EndpointStatus.read({})
    endpoint = ctx.status.endpoint
    endpoint.ready = state.state == "Ready"
    if state.url:  # an Ingress, route or API key added while serving shows at once
        endpoint.external_url = external_url(ctx.spec)
        endpoint.usage = _usage(ctx, state.url, request.model_name)
    if state.state == "Ready":
        cond = ctx.status.condition(c.READY)
        # Keep the Deploy step's message (URL and probe figures), not that of an outage in between.
        kept = cond.message if cond is not None and cond.reason == "Serving" else None
        ctx.condition(c.READY, c.TRUE, "Serving", str(kept or f"served at {state.url}"))
    else:
        ctx.condition(c.READY, c.FALSE, "EndpointNotReady", state.message or "the endpoint is not ready")
    return None


def succeeded_step(ctx: Context) -> Stage | None:
    if ctx.spec.serving.enabled:
        return Stage.DEPLOY  # serving was switched on (again): deploy the trained student, no retraining
    evaluation = ctx.evaluation or EvaluationStatus()
    message = (
        f"{evaluation.student} reached {float(evaluation.accuracy or 0.0):.1%} on held-out data; "
        "serving is disabled"
    )
    ctx.condition(c.READY, c.TRUE, "Completed", message, event="Normal")
    return None
