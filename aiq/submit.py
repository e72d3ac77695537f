"""``aiq submit training|inference``: build a job request from command-line options (or a JSON
file), POST it, print the job's id, and with ``--watch`` follow it as ``aiq watch`` does.
``aiq submit --from-file FILE``: many jobs (a JSON array, or JSON Lines) through the batch
endpoint, 1,000 per call.

Pure helpers plus one HTTP call, then the two commands (:data:`submit_app`). Errors are
:class:`SubmitError` with the exit code: 3 for a request the gateway (or this module) refuses,
4 when the gateway cannot be reached or is unavailable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import httpx
import typer

from aiq.watch import DEFAULT_URL, UrlOption, UsageExits3, WatchExit, watch_command

__all__ = [
    "SubmitError",
    "Submitted",
    "build_inference",
    "build_training",
    "parse_assignments",
    "read_body",
    "read_jobs",
    "submit",
    "submit_app",
    "submit_batches",
]

Kind = Literal["training", "inference"]


class SubmitError(Exception):
    def __init__(self, message: str, code: WatchExit = WatchExit.USAGE) -> None:
        super().__init__(message)
        self.code = code


def _value(text: str) -> Any:
    """``100`` → 100, ``1e-3`` → 0.001, ``true`` → True, ``"8"`` → "8", ``gini`` → "gini"."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


def parse_assignments(items: Iterable[str], option: str = "--hp") -> dict[str, Any]:
    """``["n_estimators=100", "criterion=gini"]`` → ``{"n_estimators": 100, ...}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SubmitError(f"{option} {item!r}: expected NAME=VALUE")
        out[name] = _value(raw.strip())
    return out


def read_body(path: Path | None) -> dict[str, Any]:
    """The JSON object in ``path`` (``-``: standard input), or ``{}``."""
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        body = json.loads(text)
    except OSError as exc:
        raise SubmitError(f"--file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SubmitError(f"--file {path}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SubmitError(f"--file {path}: expected a JSON object")
    return body


def _set(body: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Options given on the command line override the file's fields."""
    body.update({k: v for k, v in values.items() if v is not None})
    return body


def build_training(base: dict[str, Any], *, model_type: str | None, data_path: str | None,
                   hyperparameters: dict[str, Any], description: str | None,
                   requires_gpu: bool | None, framework: str | None,
                   gpu_mem_mb: int | None) -> dict[str, Any]:
    body = _set(dict(base), model_type=model_type, data_path=data_path, description=description,
                requires_gpu=requires_gpu, framework_override=framework, gpu_mem_mb=gpu_mem_mb)
    if hyperparameters:
        body["hyperparameters"] = {**(body.get("hyperparameters") or {}), **hyperparameters}
    if not body.get("model_type"):
        raise SubmitError("give --model-type (or a model_type in --file)")
    return body


def build_inference(base: dict[str, Any], *, model_id: str | None, inputs: str | None,
                    data_path: str | None, parameters: dict[str, Any],
                    description: str | None, gpu_mem_mb: int | None) -> dict[str, Any]:
    rows = None
    if inputs is not None:
        try:
            rows = json.loads(inputs)
        except ValueError as exc:
            raise SubmitError(f"--inputs: not valid JSON: {exc}") from exc
        if not isinstance(rows, list):
            raise SubmitError("--inputs: expected a JSON list of rows, e.g. '[[1, 2], [3, 4]]'")
        base = {k: v for k, v in base.items() if k != "data_path"}
    if data_path is not None:
        base = {k: v for k, v in base.items() if k != "inputs"}
    body = _set(dict(base), model_id=model_id, inputs=rows, data_path=data_path,
                description=description, gpu_mem_mb=gpu_mem_mb)
    if parameters:
        body["parameters"] = {**(body.get("parameters") or {}), **parameters}
    if not body.get("model_id"):
        raise SubmitError("give --model-id (the id of a succeeded training job)")
    return body


@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str
    duplicate: bool
    body: dict[str, Any]  # the gateway's answer, as JSON


def submit(base_url: str, kind: Kind, body: dict[str, Any], idempotency_key: str | None = None,
           client: httpx.Client | None = None, timeout_s: float = 10.0) -> Submitted:
    """POST the job; the gateway's error code and message become a :class:`SubmitError`."""
    url = f"{base_url.rstrip('/')}/jobs/{kind}"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    if client is None:
        with httpx.Client(timeout=timeout_s) as own:
            response, answer = _send(own, url, body, headers)
    else:
        response, answer = _send(client, url, body, headers)
    if response.status_code in (200, 202) and isinstance(answer, dict) and "job_id" in answer:
        return Submitted(str(answer["job_id"]), bool(answer.get("duplicate")), answer)
    raise _refusal(response, answer)


BATCH_SIZE = 1_000  # the gateway's most jobs per batch call


def read_jobs(path: Path) -> list[dict[str, Any]]:
    """The job requests in ``path`` (``-``: stdin): a JSON array of objects, or JSON Lines (one
    object a line; blank lines skipped)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SubmitError(f"--from-file {path}: {exc.strerror or exc}") from exc
    try:
        if text.lstrip().startswith("["):
            jobs = json.loads(text)
        else:
            jobs = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise SubmitError(f"--from-file {path}: not a JSON array nor JSON Lines: {exc}") from exc
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise SubmitError(f"--from-file {path}: expected JSON objects, one per job")
    if not jobs:
        raise SubmitError(f"--from-file {path}: no jobs in it")
    return jobs


def kind_of(jobs: list[dict[str, Any]]) -> Kind:
    """Inference when every job names a model_id, training when none does."""
    with_model = sum("model_id" in job for job in jobs)
    if with_model == len(jobs):
        return "inference"
    if with_model == 0:
        return "training"
    raise SubmitError("--from-file mixes training and inference jobs (some name a model_id): "
                      "put them in two files, or give --kind")


def _send(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]
          ) -> tuple[httpx.Response, Any]:
    """POST ``body`` (with the API key from ``AIQ_API_KEY``): the response and its JSON ({} when
    it has none); the gateway out of reach is a SubmitError."""
    if os.environ.get("AIQ_API_KEY"):
        headers = {**headers, "X-API-Key": os.environ["AIQ_API_KEY"]}
    try:
        response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise SubmitError(f"cannot reach the gateway at {url}: {exc or type(exc).__name__}",
                          WatchExit.UNREACHABLE) from exc
    try:
        return response, response.json()
    except ValueError:
        return response, {}


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response, answer = _send(client, url, body, {})
    if response.status_code in (200, 202) and isinstance(answer, dict) and "jobs" in answer:
        return answer
    raise _refusal(response, answer)


def _refusal(response: httpx.Response, answer: Any) -> SubmitError:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        message = f"{error.get('code')}: {error.get('message')}"
    else:
        message = f"HTTP {response.status_code} {response.text[:200]}".strip()
    code = WatchExit.UNREACHABLE if response.status_code >= 500 else WatchExit.USAGE
    return SubmitError(f"rejected: {message}", code)


def submit_batches(base_url: str, kind: Kind, jobs: list[dict[str, Any]],
                   key_prefix: str | None = None, client: httpx.Client | None = None,
                   timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """POST ``jobs`` to the batch endpoint, ``BATCH_SIZE`` per call (each call all or none);
    every job's answer, in order. ``key_prefix``: jobs without an ``idempotency_key`` get
    ``<prefix>-<n>`` (n: its place in ``jobs``), so submitting the same file again queues
    nothing twice. A refused call raises; the calls before it stay queued."""
    url = f"{base_url.rstrip('/')}/jobs/{kind}/batch"
    if key_prefix:
        jobs = [job if job.get("idempotency_key") else {**job, "idempotency_key":
                f"{key_prefix}-{n}"} for n, job in enumerate(jobs)]
    out: list[dict[str, Any]] = []
    own = client is None
    http = client or httpx.Client(timeout=timeout_s)
    try:
        for start in range(0, len(jobs), BATCH_SIZE):
            try:
                answer = _post(http, url, {"jobs": jobs[start:start + BATCH_SIZE]})
            except SubmitError as exc:
                done = f"; jobs 0-{start - 1} were queued before it" if start else ""
                raise SubmitError(f"jobs {start}-{min(start + BATCH_SIZE, len(jobs)) - 1}: "
                                  f"{exc}{done}", exc.code) from exc
            out += answer["jobs"]
    finally:
        if own:
            http.close()
    return out


# --- the commands --------------------------------------------------------------------------

FileOption = Annotated[Path | None, typer.Option(
    "--file", "-f", help="JSON request body to start from (`-`: stdin); options override it.")]
KeyOption = Annotated[str | None, typer.Option(
    help="Idempotency-Key: the same key returns the first job instead of queueing another.")]
WatchFlag = Annotated[bool, typer.Option("--watch", "-w", help="Follow the job until it ends "
                                         "(then exit as `aiq watch` does).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the gateway's JSON answer.")]
DescriptionOption = Annotated[str | None, typer.Option(help="Free text shown with the job.")]
GpuMemOption = Annotated[int | None, typer.Option(help="GPU memory estimate (MiB).")]

submit_app = typer.Typer(
    help="Submit a training or inference job and print its id (exit 0; 3 refused, 4 gateway "
         "unreachable). With --watch, follow it and exit as `aiq watch` does. With "
         "--from-file, submit many jobs through the batch endpoint.",
    no_args_is_help=True,
    invoke_without_command=True,
)


@submit_app.callback()
def submit_many(
    ctx: typer.Context,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", help="Many jobs: a JSON array of request bodies, or JSON Lines (`-`: "
        "stdin); each may carry its own idempotency_key. Sent 1,000 per call, each call all "
        "or none; prints one job id a line, in order.")] = None,
    kind: Annotated[str | None, typer.Option(
        help="training or inference (default: inference when every job has a model_id).")
    ] = None,
    key_prefix: Annotated[str | None, typer.Option(
        help="Give each job without an idempotency_key the key PREFIX-<n> (n: its line), so "
        "running the same command again queues nothing twice.")] = None,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    if from_file is None:
        if ctx.invoked_subcommand is None:
            _fail(ctx.get_help(), 0)
        return
    if ctx.invoked_subcommand is not None:
        _fail("aiq submit: --from-file takes no training/inference command (see --kind)", 3)
    try:
        jobs = read_jobs(from_file)
        if kind not in (None, "training", "inference"):
            raise SubmitError(f"--kind {kind!r}: give training or inference")
        chosen: Kind = kind_of(jobs) if kind is None else \
            ("training" if kind == "training" else "inference")
        answers = submit_batches(url, chosen, jobs, key_prefix)
    except SubmitError as exc:
        _fail(f"aiq submit: {exc}", exc.code)
    if as_json:
        typer.echo(json.dumps(answers, indent=2))
    else:
        typer.echo("\n".join(str(a["job_id"]) for a in answers))
    duplicates = sum(bool(a.get("duplicate")) for a in answers)
    typer.echo(f"aiq submit: {len(answers) - duplicates} jobs queued, {duplicates} already "
               "queued earlier (their Idempotency-Key matched)", err=True)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _submitted(kind: Kind, body: dict[str, Any], key: str | None, url: str,
               follow: bool, as_json: bool) -> None:
    try:
        done = submit(url, kind, body, key)
    except SubmitError as exc:
        _fail(f"aiq submit: {exc}", exc.code)
    if as_json:
        typer.echo(json.dumps(done.body, indent=2))
    else:
        typer.echo(done.job_id)
    if done.duplicate:
        typer.echo(f"aiq submit: Idempotency-Key {key!r} matched job {done.job_id}; "
                   "no new job queued", err=True)
    if follow:
        watch_command(done.job_id, url=url)


@submit_app.command("training", cls=UsageExits3)
def submit_training(
    model_type: Annotated[str | None, typer.Option(help="e.g. random_forest, bert, sleep.")
                          ] = None,
    data_path: Annotated[str | None, typer.Option(help="Dataset under the data root, or "
                                                  "builtin:digits|iris|wine|breast_cancer.")
                         ] = None,
    hp: Annotated[list[str] | None, typer.Option(
        "--hp", help="Hyperparameter NAME=VALUE (repeatable); VALUE is JSON if it parses.")
    ] = None,
    description: DescriptionOption = None,
    requires_gpu: Annotated[bool | None, typer.Option("--requires-gpu/--no-requires-gpu")
                            ] = None,
    framework: Annotated[str | None, typer.Option(help="Worker type to force "
                                                  "(framework_override).")] = None,
    gpu_mem_mb: GpuMemOption = None,
    file: FileOption = None,
    idempotency_key: KeyOption = None,
    follow: WatchFlag = False,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Queue a training job (e.g. --model-type random_forest --data-path builtin:digits)."""
    try:
        body = build_training(
            read_body(file), model_type=model_type, data_path=data_path,
            hyperparameters=parse_assignments(hp or []), description=description,
            requires_gpu=requires_gpu, framework=framework, gpu_mem_mb=gpu_mem_mb)
    except SubmitError as exc:
        _fail(f"aiq submit training: {exc}", exc.code)
    _submitted("training", body, idempotency_key, url, follow, as_json)


@submit_app.command("inference", cls=UsageExits3)
def submit_inference(
    model_id: Annotated[str | None, typer.Option(help="Id of a succeeded training job.")
                        ] = None,
    inputs: Annotated[str | None, typer.Option(help="Rows as JSON, e.g. '[[1, 2], [3, 4]]'.")
                      ] = None,
    data_path: Annotated[str | None, typer.Option(help="Dataset to predict on.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Inference parameter NAME=VALUE (repeatable).")] = None,
    description: DescriptionOption = None,
    gpu_mem_mb: GpuMemOption = None,
    file: FileOption = None,
    idempotency_key: KeyOption = None,
    follow: WatchFlag = False,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Queue an inference job on a trained model (give --inputs or --data-path)."""
    try:
        body = build_inference(
            read_body(file), model_id=model_id, inputs=inputs, data_path=data_path,
            parameters=parse_assignments(param or [], "--param"),
            description=description, gpu_mem_mb=gpu_mem_mb)
    except SubmitError as exc:
        _fail(f"aiq submit inference: {exc}", exc.code)
    _submitted("inference", body, idempotency_key, url, follow, as_json)
