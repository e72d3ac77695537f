"""The worker-type catalogue and job routing, built from framework plugins (schemas/plugins.py).

A worker type is one framework stack in one environment. The gateway routes each job to exactly
one type; workers of that type read only that type's streams.

The catalogue of a process is the installed plugins (``aiq.frameworks`` entry points; aiq's own
first), read once at import, plus what the gateway learns from workers' announcements in Redis
(``learn``; gateway/catalogue.py). An installed declaration wins over an announced one of the
same name. ``CATALOGUE`` (worker types), ``ROUTES`` and ``MODEL_TYPES`` are live read-only views
of it: every change replaces the tables as a whole, so a reader iterating one (even across an
``await``) sees a consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, TypeVar

from schemas.plugins import (
    Device,
    FrameworkPlugin,
    LoadedPlugin,
    ModelType,
    WorkerTypeSpec,
    installed_plugins,
)
from schemas.status import JobKind

__all__ = ["CATALOGUE", "DATA_FREE_MODELS", "DEFAULT_WORKER_TYPE", "KNOWN_MODEL_TYPES",
           "MODEL_TYPES", "ROUTES", "STATE", "Catalogue", "Device", "RoutingError", "WorkerType",
           "model_type", "route", "serves"]


@dataclass(frozen=True, slots=True)
class WorkerType:
    """One entry of the catalogue."""

    name: str
    framework: str  # MODEL_FRAMEWORK a worker of this type must declare
    module: str  # the importable distribution whose version is checked at start
    version_spec: str  # PEP 440 range the loaded framework must satisfy
    device: Device
    extra: str | None  # uv extra that installs the stack (None: part of the base install)
    model_types: frozenset[str]
    requirement: str | None = None  # or: what `uv pip install` needs (a plugin's package)
    implementation: str = ""  # module:Class of its Framework
    source: str = ""  # the plugin's distribution and version, or who announced it

    @property
    def install_command(self) -> str:
        if self.extra is not None:
            return f"uv sync --extra {self.extra}"
        if self.requirement is not None:
            return f"uv pip install '{self.requirement}'"
        return "uv sync"

    @classmethod
    def of(cls, spec: WorkerTypeSpec, plugin: FrameworkPlugin, source: str) -> WorkerType:
        return cls(spec.name, plugin.framework, spec.distribution, spec.version_spec or ">=0",
                   spec.device, spec.extra, frozenset(spec.model_types), spec.requirement,
                   plugin.implementation, source)


DEFAULT_WORKER_TYPE = "pytorch-2.1"


class RoutingError(ValueError):
    """The request names a combination no worker type serves."""


@dataclass(frozen=True)
class Tables:
    types: dict[str, WorkerType] = field(default_factory=dict)
    models: dict[str, ModelType] = field(default_factory=dict)
    # model type -> (worker type without requires_gpu, worker type with it or None)
    routes: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _clash(plugin: FrameworkPlugin, tables: Tables, frameworks: set[str]) -> list[str]:
    names = [w.name for w in plugin.worker_types if w.name in tables.types]
    names += [m.name for m in plugin.model_types if m.name in tables.models]
    return names + ([f"framework {plugin.framework}"] if plugin.framework in frameworks else [])


def _add_model(tables: Tables, m: ModelType) -> None:
    tables.models[m.name] = m
    cpu = m.cpu if m.cpu is not None else m.gpu
    assert cpu is not None  # ModelType requires one of them
    tables.routes[m.name] = (cpu, m.gpu)


def _installed(loaded: Sequence[LoadedPlugin], problems: list[str]
               ) -> tuple[Tables, dict[str, LoadedPlugin]]:
    """Whole plugins in order (and the plugin of each worker type); one that redeclares a name
    taken already is left out."""
    tables, frameworks, plugins = Tables(), set[str](), dict[str, LoadedPlugin]()
    for lp in loaded:
        clash = _clash(lp.plugin, tables, frameworks)
        if clash:
            problems.append(f"plugin {lp.name} ({lp.source}) left out: it declares "
                            f"{', '.join(clash)}, declared already by another plugin")
            continue
        frameworks.add(lp.plugin.framework)
        for spec in lp.plugin.worker_types:
            tables.types[spec.name] = WorkerType.of(spec, lp.plugin, lp.source)
            plugins[spec.name] = lp
        for m in lp.plugin.model_types:
            _add_model(tables, m)
    return tables, plugins


def _serves(tables: Tables, name: str | None, model_type: str) -> bool:
    return name is None or (name in tables.types and model_type in tables.types[name].model_types)


def _announced(base: Tables, announced: Iterable[LoadedPlugin]) -> Tables:
    """``base`` plus the announced worker and model types it lacks (first announcement wins),
    each model type only where its routes lead to worker types that serve it."""
    tables = Tables(dict(base.types), dict(base.models), dict(base.routes))
    for lp in announced:
        for spec in lp.plugin.worker_types:
            tables.types.setdefault(spec.name, WorkerType.of(spec, lp.plugin, lp.source))
    for lp in announced:
        for m in lp.plugin.model_types:
            if m.name not in tables.models and _serves(tables, m.cpu, m.name) \
                    and _serves(tables, m.gpu, m.name):
                _add_model(tables, m)
    return tables


class Catalogue:
    """The catalogue of this process: installed plugins, types added by code (benchmarks'
    simulated types), and announced plugins the gateway learned."""

    def __init__(self, loaded: Sequence[LoadedPlugin], problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)  # plugins that did not load, or were left out
        # worker type -> the installed plugin that declares it (what its workers announce)
        self.installed, self.plugins = _installed(loaded, self.problems)
        self.added: dict[str, WorkerType] = {}
        self.announced: tuple[LoadedPlugin, ...] = ()
        self.version = 0  # bumped by every change (the OpenAPI and the dashboard follow it)
        self.tables = self._build()

    def _build(self) -> Tables:
        base = Tables({**self.installed.types, **self.added}, self.installed.models,
                      self.installed.routes)
        return _announced(base, self.announced)

    def _swap(self, tables: Tables) -> bool:
        if tables == self.tables:
            return False
        self.tables = tables
        self.version += 1
        return True

    def add(self, wt: WorkerType) -> None:
        self.added[wt.name] = wt
        self._swap(self._build())

    def remove(self, name: str) -> None:
        if name not in self.added:
            raise KeyError(f"{name}: only a worker type added by code can be removed")
        del self.added[name]
        self._swap(self._build())

    def new_types(self, announced: Iterable[LoadedPlugin]) -> list[str]:
        """The worker types ``learn(announced)`` would add."""
        return [spec.name for lp in announced for spec in lp.plugin.worker_types
                if spec.name not in self.tables.types]

    def learn(self, announced: Sequence[LoadedPlugin]) -> bool:
        """Take ``announced`` (all that Redis holds now) as the announced plugins; whether the
        catalogue changed."""
        self.announced = tuple(announced)
        return self._swap(self._build())


V = TypeVar("V")


class TableView(Mapping[str, V]):
    """A live, read-only view of one table of ``STATE``."""

    def __init__(self, state: Catalogue, table: str) -> None:
        self._state = state
        self._table = table

    def _items(self) -> dict[str, V]:
        items: dict[str, V] = getattr(self._state.tables, self._table)
        return items

    def __getitem__(self, key: str) -> V:
        return self._items()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._items().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __contains__(self, key: object) -> bool:
        return key in self._items()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items()!r})"


class WorkerTypes(TableView[WorkerType], MutableMapping[str, WorkerType]):
    """The worker types. Setting one adds it to this process's catalogue (benchmarks simulate
    types so); deleting removes such a type again."""

    def __setitem__(self, key: str, value: WorkerType) -> None:
        if key != value.name:
            raise KeyError(f"{key}: the key must be the worker type's name ({value.name})")
        self._state.add(value)

    def __delitem__(self, key: str) -> None:
        self._state.remove(key)


class DataFree(Set[str]):
    """The model types that train without a data_path (live)."""

    def __init__(self, models: Mapping[str, ModelType]) -> None:
        self._models = models

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._models \
            and not self._models[name].needs_data

    def __iter__(self) -> Iterator[str]:
        return iter([n for n, m in self._models.items() if not m.needs_data])

    def __len__(self) -> int:
        return sum(1 for _ in self)


STATE = Catalogue(*installed_plugins())
CATALOGUE: MutableMapping[str, WorkerType] = WorkerTypes(STATE, "types")
ROUTES: Mapping[str, tuple[str, str | None]] = TableView(STATE, "routes")
MODEL_TYPES: Mapping[str, ModelType] = TableView(STATE, "models")
KNOWN_MODEL_TYPES: Set[str] = MODEL_TYPES.keys()
DATA_FREE_MODELS: Set[str] = DataFree(MODEL_TYPES)


def model_type(name: str) -> ModelType | None:
    """The declaration of model type ``name`` (None: unknown). One dict look-up: what request
    validation asks on every submit."""
    return STATE.tables.models.get(name)


def serves(name: str, kind: JobKind) -> bool:
    """Whether model type ``name`` takes jobs of ``kind`` (an unknown one: False)."""
    m = model_type(name)
    return m is not None and kind in m.kinds


def route(
    model_type: str, requires_gpu: bool = False, framework_override: str | None = None
) -> str:
    """Pick the worker type for a job; raises RoutingError with a human message."""
    if framework_override is not None:
        wt = CATALOGUE.get(framework_override)
        if wt is None:
            known = ", ".join(sorted(CATALOGUE))
            raise RoutingError(f"unknown worker type {framework_override!r}; known: {known}")
        if model_type not in wt.model_types:
            raise RoutingError(f"worker type {wt.name!r} does not serve model type {model_type!r}")
        if requires_gpu and wt.device is not Device.GPU:
            raise RoutingError(f"requires_gpu is true but worker type {wt.name!r} is CPU-only")
        return wt.name
    if model_type not in ROUTES:
        return DEFAULT_WORKER_TYPE
    cpu, gpu = ROUTES[model_type]
    if requires_gpu:
        if gpu is None:
            raise RoutingError(f"no GPU worker type serves model type {model_type!r}")
        return gpu
    return cpu
