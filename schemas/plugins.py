"""Framework plugins: what an ``aiq.frameworks`` entry point declares. Plain data.

A plugin is a distribution that registers one ``FrameworkPlugin`` object in the entry-point
group ``aiq.frameworks``. The object is declarative and importable without the framework's
heavy dependencies: its implementation (a ``consumers.frameworks.base.Framework``) is named as
``"module:Class"`` and imported only by a worker of one of the plugin's types. It declares

* the worker types that run it: name, the distribution whose version a worker checks at start
  (with a PEP 440 range), device, and how to install it (an aiq extra or a requirement);
* its model types: which job kinds they support, whether they need a ``data_path``, the CPU and
  GPU worker type each routes to, and their parameters with bounds, which the gateway checks at
  submit (the framework checks them again when it runs).

aiq's own frameworks are plugins too (``schemas/builtins.py``, registered in aiq's
pyproject.toml): there is one path. ``installed_plugins`` reads the entry points (metadata of the
installed distributions; the one read this package makes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.status import COMMAND_MODEL_TYPE, JobKind

ENTRY_POINT_GROUP = "aiq.frameworks"
AIQ_DISTRIBUTION = "aiq"  # its plugins load first: a third-party plugin cannot shadow them
AIQ_ORDER = ("pytorch", "tensorflow", "sklearn", "diagnostic")  # the catalogue's order
# A worker type's name goes inside Redis keys' hash tags ({name}): no braces, colons or spaces.
WORKER_TYPE_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MODEL_TYPE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
IMPLEMENTATION = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
Scalar = int | float | str | bool | None
ParamType = Literal["int", "float", "str", "bool"]


class Device(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


class Parameter(BaseModel):
    """One parameter of a model type. ``choices``: for a ``str``, the values accepted; for a
    number, values accepted besides the range (``n_jobs``: -1, or 1 to 64). ``nullable``: null
    is accepted too (e.g. "no limit")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=PARAMETER_NAME)
    type: ParamType
    default: Scalar = None
    gt: int | float | None = None
    ge: int | float | None = None
    lt: int | float | None = None
    le: int | float | None = None
    choices: tuple[int | float | str | bool, ...] = ()
    nullable: bool = False
    doc: str = ""

    def problem(self, value: Any) -> str | None:
        """The rule ``value`` breaks, None when it is accepted."""
        if value is None and self.nullable:
            return None
        return None if self._accepts(value) else self.rule()

    def _accepts(self, value: Any) -> bool:
        if self.choices and any(_same(value, choice) for choice in self.choices):
            return True
        kind = self.type
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "str":
            return isinstance(value, str) and not self.choices
        if type(value) is int:  # the common case first (no bool: its type is bool)
            pass
        elif type(value) is not float or not math.isfinite(value) \
                or (kind == "int" and not value.is_integer()):
            return False
        gt, ge, lt, le = self.gt, self.ge, self.lt, self.le
        return ((gt is None or value > gt) and (ge is None or value >= ge)
                and (lt is None or value < lt) and (le is None or value <= le))

    def rule(self) -> str:
        """What the parameter accepts, in words: ``an integer between 1 and 5000``."""
        if self.type == "bool":
            text = "true or false"
        elif self.type == "str":
            text = ("one of " + ", ".join(map(str, self.choices))) if self.choices \
                else "a string"
        else:
            text = ("an integer" if self.type == "int" else "a number") + self._bounds()
            if self.choices:
                text += ", or one of " + ", ".join(map(_shown, self.choices))
        return text + (" or null" if self.nullable else "")

    def _bounds(self) -> str:
        if self.ge is not None and self.le is not None:
            return f" between {_shown(self.ge)} and {_shown(self.le)}"
        ops = (("> ", self.gt), (">= ", self.ge), ("< ", self.lt), ("<= ", self.le))
        parts = [op + _shown(bound) for op, bound in ops if bound is not None]
        return (" " + " and ".join(parts)) if parts else ""


def _unique(names: list[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} declared twice: {', '.join(repeated)}")


class ModelType(BaseModel):
    """A model type: how jobs of it route and what they may ask for."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: str = Field(pattern=MODEL_TYPE_NAME)
    cpu: str | None = Field(default=None, description="the worker type jobs route to")
    gpu: str | None = Field(default=None, description="the worker type jobs with "
                            "requires_gpu route to (None: no GPU route)")
    kinds: tuple[JobKind, ...] = (JobKind.TRAINING, JobKind.INFERENCE)
    needs_data: bool = Field(default=True, description="training needs a data_path")
    parameters: tuple[Parameter, ...] = Field(default=(), description="training "
                                              "hyperparameters, checked at submit")
    inference_parameters: tuple[Parameter, ...] = ()
    doc: str = ""

    @model_validator(mode="after")
    def _routable(self) -> ModelType:
        if self.cpu is None and self.gpu is None:
            raise ValueError(f"model type {self.name}: give its cpu or gpu worker type")
        if self.name == COMMAND_MODEL_TYPE:
            raise ValueError(f"model type {self.name!r} is reserved for command jobs "
                             "(POST /jobs/command)")
        _unique([p.name for p in self.parameters], f"model type {self.name}: parameter")
        _unique([p.name for p in self.inference_parameters],
                f"model type {self.name}: inference parameter")
        return self

    @cached_property
    def by_name(self) -> dict[str, Parameter]:
        """The training parameters by name."""
        return {p.name: p for p in self.parameters}

    def parameter(self, name: str) -> Parameter | None:
        return self.by_name.get(name)


class WorkerTypeSpec(BaseModel):
    """A worker type: one framework stack in one environment."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: str = Field(pattern=WORKER_TYPE_NAME)
    distribution: str = Field(min_length=1, description="whose installed version a worker "
                              "checks at start")
    version_spec: str = Field(default="", description="PEP 440 range, e.g. >=2.1,<2.2")
    device: Device = Device.CPU
    extra: str | None = Field(default=None, description="aiq's uv extra that installs it")
    requirement: str | None = Field(default=None, description="what `uv pip install` needs "
                                    "to install it (a plugin's own package)")
    model_types: tuple[str, ...] = Field(min_length=1)

    @field_validator("version_spec")
    @classmethod
    def _pep440(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier as exc:
            raise ValueError(f"not a PEP 440 version range: {exc}") from None
        return value


class FrameworkPlugin(BaseModel):
    """What one ``aiq.frameworks`` entry point resolves to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    framework: str = Field(pattern=PARAMETER_NAME, description="MODEL_FRAMEWORK of its workers")
    implementation: str = Field(pattern=IMPLEMENTATION, description="module:Class of the "
                                "Framework, imported by its workers only")
    worker_types: tuple[WorkerTypeSpec, ...] = Field(min_length=1)
    model_types: tuple[ModelType, ...] = Field(min_length=1)
    doc: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FrameworkPlugin:
        _unique([w.name for w in self.worker_types], "worker type")
        _unique([m.name for m in self.model_types], "model type")
        types = {w.name: w for w in self.worker_types}
        declared = {m.name for m in self.model_types}
        for wt in self.worker_types:
            unknown = sorted(set(wt.model_types) - declared)
            if unknown:
                raise ValueError(f"worker type {wt.name} serves undeclared model types: "
                                 f"{', '.join(unknown)}")
        for m in self.model_types:
            for device, name in ((Device.CPU, m.cpu), (Device.GPU, m.gpu)):
                target = types.get(name) if name is not None else None
                if name is not None and (target is None or target.device is not device
                                         or m.name not in target.model_types):
                    raise ValueError(f"model type {m.name}: its {device.value} route {name} is "
                                     f"no {device.value} worker type of this plugin serving it")
        return self


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin and where it came from: ``source`` is the distribution and version that
    registered it (``aiq 0.1.0``), or who announced it."""

    name: str
    source: str
    plugin: FrameworkPlugin


def _order(ep: EntryPoint) -> tuple[bool, str, int, str]:
    """aiq's own first, in the order of the design's table, then by distribution and name."""
    dist = ep.dist.name if ep.dist is not None else ""
    rank = AIQ_ORDER.index(ep.name) if ep.name in AIQ_ORDER else len(AIQ_ORDER)
    return dist != AIQ_DISTRIBUTION, dist, rank, ep.name


def _load(ep: EntryPoint) -> LoadedPlugin:
    """Raises what importing the plugin raises, or TypeError when it is no FrameworkPlugin."""
    source = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
    value = ep.load()
    if not isinstance(value, FrameworkPlugin):
        raise TypeError(f"{ep.value} is a {type(value).__name__}, not a FrameworkPlugin")
    return LoadedPlugin(ep.name, source, value)


def installed_plugins() -> tuple[list[LoadedPlugin], list[str]]:
    """The installed plugins (aiq's own first), and one line per plugin that failed to load."""
    loaded: list[LoadedPlugin] = []
    problems: list[str] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=_order):
        try:
            loaded.append(_load(ep))
        except Exception as exc:  # a broken plugin must not take the others down
            dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
            problems.append(f"plugin {ep.name}{dist} did not load: {ep.value}: "
                            f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500])
    if not any(lp.source.startswith(f"{AIQ_DISTRIBUTION} ") for lp in loaded):
        problems.append("aiq's own frameworks are not registered in this environment (its "
                        f"{ENTRY_POINT_GROUP} entry points are missing): install aiq with "
                        "`uv sync`, or `uv pip install -e <aiq checkout>`")
    return loaded, problems
