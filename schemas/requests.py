"""What clients send. Validation here gives the 422 messages users read."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.catalogue import (
    CATALOGUE,
    DATA_FREE_MODELS,
    KNOWN_MODEL_TYPES,
    RoutingError,
    model_type,
    route,
)
from schemas.status import JobKind, Priority

MAX_BATCH_JOBS = 1_000  # jobs one batch submit may hold
# Visible ASCII without spaces: safe inside a Redis key, in logs and in headers.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,200}$"
JOB_ID_PATTERN = r"^job_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
MAX_INLINE_ROWS = 10_000
INT_RANGE = (-(2**63), 2**64 - 1)  # what a stored job (JSON via orjson) can hold
MAX_TIMEOUT_S = 30 * 24 * 3600  # the largest timeout_s a request may ask; workers clamp it
# to their own MAX_JOB_TIMEOUT_S (default 7 days)
_TIMEOUT_DOC = ("seconds the job's code may run (each attempt); past it the job fails with "
                "code timeout. Default: the worker type's JOB_TIMEOUT_S; at most its "
                "MAX_JOB_TIMEOUT_S")
MAX_JOB_RETRIES = 1_000  # the largest max_retries a request may ask
_RETRIES_DOC = ("how many times a retryable failure of the job is retried (0: never run "
                "twice); at most the worker type's MAX_RETRIES, which is also the default")

# A job's own retry budget: an integer 0 to MAX_JOB_RETRIES (no bool, float or string).
MaxRetries = Annotated[StrictInt | None, Field(ge=0, le=MAX_JOB_RETRIES, description=_RETRIES_DOC)]
_PRIORITY_DOC = ("the job's lane: `high` jobs are started before `normal` ones, while a share "
                 "of the starts (1 in PRIORITY_WEIGHT + 1) stays with a normal backlog so it "
                 "is never starved. A worker type whose MAX_PRIORITY is `normal` queues every "
                 "job as normal")
JobPriority = Annotated[Priority, Field(description=_PRIORITY_DOC)]


def json_safe(value: Any) -> Any:
    """A value the job's stored JSON can hold exactly: integers within 64 bits, finite numbers
    (no NaN or Infinity), strings of valid Unicode (no lone surrogates)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise ValueError("integers must fit in 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (NaN and Infinity are not JSON)")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


Scalar = Annotated[str | int | float | bool | None, AfterValidator(json_safe)]
Text = Annotated[str, AfterValidator(json_safe)]
_SCALAR_TYPES = (str, int, float, bool, type(None))


# What an extra hyperparameter may be, as the JSON schema says it (see _extras_are_scalars).
_SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}


class Hyperparameters(BaseModel):
    """Common hyperparameters; model-specific extras (n_estimators, seconds, …) pass through."""

    model_config = ConfigDict(extra="allow",
                              json_schema_extra={"additionalProperties": _SCALAR_SCHEMA})

    epochs: int = Field(default=1, gt=0, le=10_000)
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    batch_size: int = Field(default=32, gt=0, le=65_536)

    @model_validator(mode="after")
    def _extras_are_scalars(self) -> Hyperparameters:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, _SCALAR_TYPES):
                raise ValueError(f"hyperparameter {name!r} must be a number, string or boolean")
            try:
                json_safe(name)
                json_safe(value)
            except ValueError as exc:
                raise ValueError(f"hyperparameter {name!r}: {exc}") from None
        return self


UNKNOWN_MODEL_TYPE = "unknown_model_type"  # the error type of a model type no plugin declares
_MODEL_TYPE_DOC = ("a model type of an installed framework plugin, or of one a worker "
                   "announced: the set grows while the gateway runs, so it is no enum here "
                   "(`examples` lists those known when this spec was made); an unknown one is "
                   "a 422 naming the known ones")


def _check_model_type(value: str) -> str:
    m = model_type(value)
    if m is None:
        known = ", ".join(sorted(KNOWN_MODEL_TYPES))
        raise PydanticCustomError(UNKNOWN_MODEL_TYPE, "unknown model type {model_type}; known: "
                                  "{known}", {"model_type": repr(value), "known": known})
    if JobKind.TRAINING not in m.kinds:
        raise ValueError(f"model type {value!r} serves no training jobs")
    return value


def _hyperparameter_errors(name: str, hp: Hyperparameters) -> list[InitErrorDetails]:
    """The declared parameters of model type ``name`` that ``hp`` breaks (those it gives), as
    pydantic errors on ``hyperparameters.<parameter>``. Undeclared extras pass through (the
    framework reads them)."""
    m = model_type(name)
    errors: list[InitErrorDetails] = []
    if m is None or not m.parameters:
        return errors
    declared, extra = m.by_name, hp.model_extra or {}
    given = [(p, getattr(hp, p)) for p in hp.model_fields_set if p not in extra and p in declared]
    for parameter, value in [*given, *extra.items()]:
        rule = declared[parameter].problem(value) if parameter in declared else None
        if rule is not None:
            errors.append(InitErrorDetails(
                type=PydanticCustomError("invalid_hyperparameter",
                                         "should be {rule} for model type {model_type}",
                                         {"rule": rule, "model_type": name}),
                loc=("hyperparameters", parameter), input=value))
    return errors


def inference_parameter_problems(model_type_name: str, parameters: dict[str, Any]
                                 ) -> list[tuple[str, str]]:
    """The inference parameters ``model_type_name`` declares that ``parameters`` breaks, as
    (``parameters.<name>``, what it should be); undeclared ones pass through (the framework
    reads them). Checked at submit once the model, and so its type, is known."""
    m = model_type(model_type_name)
    if m is None or not m.inference_parameters:
        return []
    declared = {p.name: p for p in m.inference_parameters}
    out = []
    for name, value in parameters.items():
        rule = declared[name].problem(value) if name in declared else None
        if rule is not None:
            out.append((f"parameters.{name}",
                        f"should be {rule} for model type {model_type_name}"))
    return out


def _training_schema(schema: dict[str, Any]) -> None:
    """The spec says what _data_needed enforces: a data_path unless the model type needs none
    (those known when the spec is made)."""
    schema["anyOf"] = [
        {"required": ["data_path"], "properties": {"data_path": {"type": "string"}}},
        {"properties": {"model_type": {"enum": sorted(DATA_FREE_MODELS)}}},
    ]


def _model_type_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = sorted(KNOWN_MODEL_TYPES)


def _worker_type_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = sorted(CATALOGUE)


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(),
                              json_schema_extra=_training_schema)

    model_type: str = Field(min_length=1, max_length=64, description=_MODEL_TYPE_DOC,
                            json_schema_extra=_model_type_schema)
    data_path: Text | None = Field(default=None, min_length=1, max_length=1024)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    description: Text = Field(default="", max_length=2000)
    requires_gpu: StrictBool = False  # 0, 1 or "yes" are refused, as the spec says
    framework_override: str | None = Field(
        default=None, max_length=64, description="a worker type to force (`examples`: those "
        "known when this spec was made; an unknown one is a 422 routing_error)",
        json_schema_extra=_worker_type_schema)
    gpu_mem_mb: int | None = Field(default=None, gt=0, le=16_777_216,
                                   description="GPU memory estimate (MiB)")
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S, description=_TIMEOUT_DOC)
    max_retries: MaxRetries = None
    priority: JobPriority = Priority.NORMAL

    _model_type = field_validator("model_type")(_check_model_type)

    @model_validator(mode="after")
    def _data_needed(self) -> TrainingRequest:
        m = model_type(self.model_type)
        if self.data_path is None and (m is None or m.needs_data):
            raise ValueError(f"data_path is required for model type {self.model_type!r}")
        return self

    @model_validator(mode="after")
    def _declared_bounds(self) -> TrainingRequest:
        """Each hyperparameter the request gives within the bounds its model type declares:
        a 422 naming ``hyperparameters.<name>`` otherwise."""
        errors = _hyperparameter_errors(self.model_type, self.hyperparameters)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class InferenceRequest(BaseModel):
    # The spec says what _one_source enforces: rows inline, or a data_path, never both.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra={
        "oneOf": [
            {"required": ["inputs"], "properties": {"inputs": {"type": "array"},
                                                    "data_path": {"type": "null"}}},
            {"required": ["data_path"], "properties": {"data_path": {"type": "string"},
                                                       "inputs": {"type": "null"}}},
        ]})

    model_id: JobId = Field(description="id of the training job whose model to use")
    inputs: list[list[Scalar]] | None = Field(
        default=None, min_length=1, max_length=MAX_INLINE_ROWS,
        description="inline rows; give exactly one of inputs or data_path")
    data_path: Text | None = Field(default=None, min_length=1, max_length=1024)
    parameters: dict[Text, Scalar] = Field(default_factory=dict)
    description: Text = Field(default="", max_length=2000)
    gpu_mem_mb: int | None = Field(default=None, gt=0, le=16_777_216)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S, description=_TIMEOUT_DOC)
    max_retries: MaxRetries = None
    priority: JobPriority = Priority.NORMAL

    @model_validator(mode="after")
    def _one_source(self) -> InferenceRequest:
        if (self.inputs is None) == (self.data_path is None):
            raise ValueError("give exactly one of inputs (inline rows) or data_path")
        if self.inputs is not None and len(self.inputs) == 0:
            raise ValueError("inputs must hold at least one row")
        return self


_KEY_DOC = ("this job's Idempotency-Key: submitting a batch again returns the same job for it "
            "(`duplicate: true`); 1-200 visible ASCII characters")


ROUTING_ERROR = "routing_error"  # the error type of a batch job no worker type serves


def _routable(item: TrainingRequest) -> None:
    try:
        route(item.model_type, item.requires_gpu, item.framework_override)
    except RoutingError as exc:
        raise PydanticCustomError(ROUTING_ERROR, "{reason}", {"reason": str(exc)}) from None


class TrainingBatchItem(TrainingRequest):
    """One job of a batch: a training request and its own Idempotency-Key."""

    idempotency_key: str | None = Field(default=None, max_length=200,
                                        pattern=IDEMPOTENCY_KEY_PATTERN, description=_KEY_DOC)

    @model_validator(mode="after")
    def _routes(self) -> TrainingBatchItem:  # a batch names the job that cannot be routed
        _routable(self)
        return self


class InferenceBatchItem(InferenceRequest):
    """One job of a batch: an inference request and its own Idempotency-Key."""

    idempotency_key: str | None = Field(default=None, max_length=200,
                                        pattern=IDEMPOTENCY_KEY_PATTERN, description=_KEY_DOC)


class TrainingBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[TrainingBatchItem] = Field(min_length=1, max_length=MAX_BATCH_JOBS,
                                          description=f"1 to {MAX_BATCH_JOBS} training jobs")


class InferenceBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[InferenceBatchItem] = Field(min_length=1, max_length=MAX_BATCH_JOBS,
                                           description=f"1 to {MAX_BATCH_JOBS} inference jobs")


def dump_json_safe(value: Any) -> Any:
    """Plain JSON-able form of a request part (for storage)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
