"""What clients send. Validation here gives the 422 messages users read."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.catalogue import DATA_FREE_MODELS, KNOWN_MODEL_TYPES

JOB_ID_PATTERN = r"^job_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
Scalar = str | int | float | bool | None
MAX_INLINE_ROWS = 10_000


class Hyperparameters(BaseModel):
    """Common hyperparameters; model-specific extras (n_estimators, seconds, …) pass through."""

    model_config = ConfigDict(extra="allow")

    epochs: int = Field(default=1, gt=0, le=10_000)
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    batch_size: int = Field(default=32, gt=0, le=65_536)

    @model_validator(mode="after")
    def _extras_are_scalars(self) -> Hyperparameters:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, Scalar):
                raise ValueError(f"hyperparameter {name!r} must be a number, string or boolean")
        return self


def _check_model_type(value: str) -> str:
    if value not in KNOWN_MODEL_TYPES:
        known = ", ".join(sorted(KNOWN_MODEL_TYPES))
        raise ValueError(f"unknown model type {value!r}; known: {known}")
    return value


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_type: str = Field(min_length=1, max_length=64)
    data_path: str | None = Field(default=None, min_length=1, max_length=1024)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    description: str = Field(default="", max_length=2000)
    requires_gpu: bool = False
    framework_override: str | None = Field(default=None, max_length=64)
    gpu_mem_mb: int | None = Field(default=None, gt=0, description="GPU memory estimate (MiB)")

    _model_type = field_validator("model_type")(_check_model_type)

    @model_validator(mode="after")
    def _data_needed(self) -> TrainingRequest:
        if self.data_path is None and self.model_type not in DATA_FREE_MODELS:
            raise ValueError(f"data_path is required for model type {self.model_type!r}")
        return self


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_id: JobId = Field(description="id of the training job whose model to use")
    inputs: list[list[Scalar]] | None = Field(default=None, max_length=MAX_INLINE_ROWS)
    data_path: str | None = Field(default=None, min_length=1, max_length=1024)
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    description: str = Field(default="", max_length=2000)
    gpu_mem_mb: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> InferenceRequest:
        if (self.inputs is None) == (self.data_path is None):
            raise ValueError("give exactly one of inputs (inline rows) or data_path")
        if self.inputs is not None and len(self.inputs) == 0:
            raise ValueError("inputs must hold at least one row")
        return self


def dump_json_safe(value: Any) -> Any:
    """Plain JSON-able form of a request part (for storage)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
