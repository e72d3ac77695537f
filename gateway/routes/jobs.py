"""Jobs: submit (training, inference), status, full record, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from gateway import body
from gateway.catalogue import catalogue_of, may_learn
from gateway.deps import JobIdDep, ProducerDep, WorkerTypeFilter, producer_of
from gateway.errors import ApiError, responses
from gateway.models import BatchJob, BatchSubmitted, CancelResult, JobList
from gateway.settings import GatewaySettings
from schemas.catalogue import RoutingError
from schemas.commands import CommandRequest, CommandsDisabled, route_command
from schemas.records import JobStatusView, JobSubmitted, JobView, job_view, status_view
from schemas.requests import InferenceBatch, InferenceRequest, TrainingBatch, TrainingRequest
from schemas.status import JobStatus
from streams.errors import AiqError, IdempotencyConflict, JobNotFound, ModelNotReady

router = APIRouter(prefix="/jobs", tags=["jobs"])
M = TypeVar("M", bound=BaseModel)

_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "queued; `Location` is the job's status URL"},
    200: {"model": JobSubmitted,
          "description": "Idempotency-Key matched an earlier submit: that job, `duplicate: true`"},
}


def _accepted(submitted: JobSubmitted) -> Response:
    """202 (200 for a duplicate) with ``Location``. The response is built here rather than by
    FastAPI's response_model pass (the model stays declared, for the spec): issue #15."""
    return Response(submitted.model_dump_json(), media_type="application/json",
                    status_code=200 if submitted.duplicate else 202,
                    headers={"Location": submitted.status_url})


@router.post("/training", status_code=202, response_model=JobSubmitted, responses={
    **_SUBMIT_RESPONSES, **responses("validation_error", "routing_error", "idempotency_conflict",
                                     "payload_too_large", "queue_full", "redis_unavailable")},
    openapi_extra=body.submit_spec(TrainingRequest))
async def submit_training(request: Request) -> Response:
    """Queue a training job on the worker type its model type routes to. Model types come from
    framework plugins: those installed with the gateway and those workers announced."""
    key = body.idempotency_key(request)
    req = await _training(request, TrainingRequest)
    producer = producer_of(request)
    try:
        submitted = await producer.submit_training(req, key)
    except RoutingError:  # e.g. a framework_override of a type announced a moment ago
        if not await catalogue_of(request).refresh():
            raise
        submitted = await producer.submit_training(req, key)
    return _accepted(submitted)


async def _training(request: Request, model: type[M]) -> M:
    """The body as ``model``; a refusal for an unknown model type or an unroutable job is made
    only after the announced types were read once more (a worker may have just announced it)."""
    try:
        return await body.parse(request, model)
    except RequestValidationError as exc:
        if not may_learn(exc) or not await catalogue_of(request).refresh():
            raise
    return await body.parse(request, model)


@router.post("/inference", status_code=202, response_model=JobSubmitted, responses={
    **_SUBMIT_RESPONSES, **responses("validation_error", "model_not_found", "model_not_ready",
                                     "routing_error", "idempotency_conflict",
                                     "payload_too_large", "queue_full", "redis_unavailable")},
    openapi_extra=body.submit_spec(InferenceRequest))
async def submit_inference(request: Request) -> Response:
    """Queue an inference job on the model of a succeeded training job (`model_id`)."""
    key = body.idempotency_key(request)
    req = await body.parse(request, InferenceRequest)
    try:
        submitted = await producer_of(request).submit_inference(req, key)
    except JobNotFound as exc:
        message = f"model_id {req.model_id} names no training job (unknown or expired)"
        raise ApiError(422, "model_not_found", message, [
            {"field": "body.model_id", "message": message, "type": "model_not_found"}]) from exc
    return _accepted(submitted)


def _commands_on(settings: GatewaySettings) -> tuple[str, ...]:
    """The types command jobs may go to; 403 when the gateway takes none (no API key: command
    jobs run arbitrary code, so they are never open to whoever reaches the port)."""
    if settings.api_key is None:
        raise ApiError(403, "command_jobs_disabled", "command jobs run arbitrary code on the "
                       "workers: this gateway takes them only with API_KEY set")
    if not settings.command_types:
        raise ApiError(403, "command_jobs_disabled", "command jobs are off on this gateway "
                       "(COMMAND_WORKER_TYPES is empty)")
    return settings.command_types


async def _command_route(request: Request, settings: GatewaySettings,
                         req: CommandRequest) -> str:
    """The routed worker type; a refusal is decided after the catalogue was read again (a
    plugin's worker type its workers announced a moment ago)."""
    try:
        return route_command(settings.command_types, req.requires_gpu, req.framework_override)
    except RoutingError:
        await catalogue_of(request).refresh()
    return _command_route_now(settings, req)


def _command_route_now(settings: GatewaySettings, req: CommandRequest) -> str:
    try:
        return route_command(settings.command_types, req.requires_gpu, req.framework_override)
    except CommandsDisabled as exc:
        raise ApiError(403, "command_jobs_disabled", str(exc)) from exc
    except RoutingError as exc:  # only a framework_override can name a type that cannot serve
        raise ApiError(422, "routing_error", str(exc), [
            {"field": "body.framework_override", "message": str(exc), "type": "routing"}]) from exc


@router.post("/command", status_code=202, response_model=JobSubmitted, responses={
    **_SUBMIT_RESPONSES, **responses("validation_error", "routing_error", "command_jobs_disabled",
                                     "idempotency_conflict", "payload_too_large", "queue_full",
                                     "redis_unavailable")},
    openapi_extra=body.submit_spec(CommandRequest))
async def submit_command(request: Request) -> Response:
    """Queue a command job: your own program (an argv, no shell) run by a worker of a type
    with command jobs on, in its own process group, its output kept as the job's log. Needs
    the gateway's API_KEY and COMMAND_WORKER_TYPES; see docs/SECURITY.md."""
    settings = cast(GatewaySettings, request.app.state.settings)
    _commands_on(settings)
    key = body.idempotency_key(request)
    req = await body.parse(request, CommandRequest)
    worker_type = await _command_route(request, settings, req)
    return _accepted(await producer_of(request).submit_command(req, worker_type, key))


_BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "every job is queued, or was already (`duplicate: true` per job)"},
    200: {"model": BatchSubmitted,
          "description": "every job's Idempotency-Key matched an earlier job: nothing queued"},
}


def _batch(response: Response, submitted: list[JobSubmitted]) -> BatchSubmitted:
    jobs = [BatchJob(job_id=s.job_id, status=s.status, worker_type=s.worker_type,
                     duplicate=s.duplicate) for s in submitted]
    duplicates = sum(job.duplicate for job in jobs)
    if duplicates == len(jobs):
        response.status_code = 200
    return BatchSubmitted(jobs=jobs, queued=len(jobs) - duplicates, duplicates=duplicates)


def _refused(exc: AiqError, status: int, code: str, field: str) -> ApiError:
    """A batch refused for some of its jobs: the error names each one's field."""
    fields = [{"field": f"body.jobs[{i}].{field}", "message": str(exc), "type": code}
              for i in exc.items]
    return ApiError(status, code, str(exc), fields or None)


@router.post("/training/batch", status_code=202, response_model=BatchSubmitted, responses={
    **_BATCH_RESPONSES, **responses("validation_error", "idempotency_conflict",
                                    "payload_too_large", "queue_full", "redis_unavailable",
                                    "not_replicated")},
    openapi_extra=body.body_spec(TrainingBatch))
async def submit_training_batch(request: Request) -> Response:
    """Queue up to 1,000 training jobs at once, all or none: one invalid job is a 422 naming
    its field (`body.jobs[3].model_type`, `body.jobs[3].hyperparameters.epochs`) and nothing
    is queued. Each job may carry its own `idempotency_key`; a batch sent again answers the
    same job ids (`duplicate: true`)."""
    batch = await _training(request, TrainingBatch)
    try:
        submitted = await producer_of(request).submit_training_batch(
            [(job, job.idempotency_key) for job in batch.jobs])
    except IdempotencyConflict as exc:
        raise _refused(exc, 409, exc.code, "idempotency_key") from exc
    answer = _batch(Response(), submitted)
    return Response(answer.model_dump_json(), media_type="application/json",
                    status_code=200 if answer.queued == 0 else 202)


@router.post("/inference/batch", status_code=202, response_model=BatchSubmitted, responses={
    **_BATCH_RESPONSES, **responses("validation_error", "model_not_found", "model_not_ready",
                                    "idempotency_conflict", "payload_too_large", "queue_full",
                                    "redis_unavailable", "not_replicated")})
async def submit_inference_batch(
    body: InferenceBatch, producer: ProducerDep, response: Response,
) -> BatchSubmitted:
    """Queue up to 1,000 inference jobs at once, all or none: every `model_id` must name a
    succeeded training job (422 `model_not_found` / 409 `model_not_ready` naming each job that
    does not, and nothing is queued)."""
    try:
        submitted = await producer.submit_inference_batch(
            [(job, job.idempotency_key) for job in body.jobs])
    except JobNotFound as exc:
        raise _refused(exc, 422, "model_not_found", "model_id") from exc
    except ModelNotReady as exc:
        raise _refused(exc, 409, exc.code, "model_id") from exc
    except IdempotencyConflict as exc:
        raise _refused(exc, 409, exc.code, "idempotency_key") from exc
    return _batch(response, submitted)


# What gateway/fast_submit.py answers without the routing pass: the paths of the endpoints
# above that take the request only (the same functions, so both ways answer alike).
FAST_ENDPOINTS = {"/jobs/training": submit_training, "/jobs/inference": submit_inference}


@router.get("/{job_id}/status", response_model=JobStatusView,
            responses=responses("job_not_found", "redis_unavailable"))
async def get_status(job_id: JobIdDep, producer: ProducerDep) -> JobStatusView:
    """Status, progress, result or error of one job."""
    return status_view(await producer.get(job_id))


@router.get("/{job_id}", response_model=JobView,
            responses=responses("job_not_found", "redis_unavailable"))
async def get_job(job_id: JobIdDep, producer: ProducerDep) -> JobView:
    """The full record: request, attempts, deliveries, worker, timings, result, error."""
    return job_view(await producer.get(job_id))


@router.get("", response_model=JobList,
            responses=responses("validation_error", "redis_unavailable"))
async def list_jobs(
    producer: ProducerDep, worker_type: WorkerTypeFilter,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    """Most recent jobs first."""
    records = await producer.list(status, worker_type, limit)
    return JobList(jobs=[status_view(r) for r in records], count=len(records))


@router.post("/{job_id}/cancel", response_model=CancelResult,
             responses=responses("job_not_found", "illegal_transition", "redis_unavailable"))
async def cancel_job(job_id: JobIdDep, producer: ProducerDep) -> CancelResult:
    """Queued and retrying jobs end at once; a running job stops at its next step boundary."""
    status = await producer.cancel(job_id)
    final = status is JobStatus.CANCELLED
    return CancelResult(job_id=job_id, status="cancelled" if final else "cancelling")
