"""Framework plugins: declarations, the built-ins registered as entry points, and the catalogue
built from installed and announced plugins."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import builtins
from schemas.catalogue import (
    CATALOGUE,
    DATA_FREE_MODELS,
    KNOWN_MODEL_TYPES,
    ROUTES,
    STATE,
    Catalogue,
    RoutingError,
    WorkerType,
    route,
)
from schemas.plugins import (
    ENTRY_POINT_GROUP,
    Device,
    FrameworkPlugin,
    LoadedPlugin,
    ModelType,
    Parameter,
    WorkerTypeSpec,
    installed_plugins,
)
from schemas.requests import TrainingRequest


def plugin(worker_type: str = "team-cpu", model_types: tuple[str, ...] = ("team_model",),
           gpu: bool = False, **model: Any) -> FrameworkPlugin:
    """A small plugin: one CPU worker type (and a GPU one with ``gpu``)."""
    types = [WorkerTypeSpec(name=worker_type, distribution="numpy", version_spec=">=1.24",
                            requirement="team-plugin", model_types=model_types)]
    if gpu:
        types.append(WorkerTypeSpec(name=f"{worker_type}-gpu", distribution="numpy",
                                    device=Device.GPU, model_types=model_types))
    return FrameworkPlugin(
        framework=worker_type.replace("-", "_"), implementation="team.framework:Team",
        worker_types=tuple(types),
        model_types=tuple(ModelType(name=m, cpu=worker_type,
                                    gpu=f"{worker_type}-gpu" if gpu else None, **model)
                          for m in model_types))


# --- parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize(("param", "good", "bad", "rule"), [
    (Parameter(name="n", type="int", ge=1, le=5_000), [1, 5_000, 7.0], [0, 5_001, 2.5, True,
                                                                        "3", None],
     "an integer between 1 and 5000"),
    (Parameter(name="n_jobs", type="int", ge=1, le=64, choices=(-1,)), [-1, 1, 64], [0, -2],
     "an integer between 1 and 64, or one of -1"),
    (Parameter(name="C", type="float", gt=0, le=1e6), [1e-9, 10, 1e6], [0, -1, 1e7, "x"],
     "a number > 0 and <= 1000000"),
    (Parameter(name="gamma", type="float", gt=0, le=1e6, choices=("scale", "auto")),
     ["scale", "auto", 0.5], ["other", 0], "a number > 0 and <= 1000000, or one of scale, auto"),
    (Parameter(name="kernel", type="str", choices=("rbf", "linear")), ["rbf"], ["poly", 1],
     "one of rbf, linear"),
    (Parameter(name="flag", type="bool"), [True, False], [1, 0, "true"], "true or false"),
    (Parameter(name="max_depth", type="int", ge=1, le=1000, nullable=True), [None, 3], [0],
     "an integer between 1 and 1000 or null"),
    (Parameter(name="label", type="str"), ["y"], [3, None], "a string"),
])
def test_a_parameter_accepts_what_it_declares(param: Parameter, good: list[Any], bad: list[Any],
                                              rule: str) -> None:
    assert [param.problem(v) for v in good] == [None] * len(good)
    assert [param.problem(v) for v in bad] == [rule] * len(bad)


def test_a_plugin_is_checked_whole() -> None:
    with pytest.raises(ValidationError, match="serves undeclared model types: other"):
        FrameworkPlugin(framework="x", implementation="x:X", worker_types=(
            WorkerTypeSpec(name="x", distribution="x", model_types=("m", "other")),),
            model_types=(ModelType(name="m", cpu="x"),))
    with pytest.raises(ValidationError, match="gpu route x is no gpu worker type"):
        FrameworkPlugin(framework="x", implementation="x:X", worker_types=(
            WorkerTypeSpec(name="x", distribution="x", model_types=("m",)),),
            model_types=(ModelType(name="m", cpu="x", gpu="x"),))
    with pytest.raises(ValidationError, match="give its cpu or gpu worker type"):
        ModelType(name="m")
    with pytest.raises(ValidationError, match="reserved for command jobs"):
        ModelType(name="command", cpu="x")
    with pytest.raises(ValidationError, match="PEP 440"):
        WorkerTypeSpec(name="x", distribution="x", version_spec="2.1", model_types=("m",))
    with pytest.raises(ValidationError, match="should match pattern"):
        WorkerTypeSpec(name="{bad}", distribution="x", model_types=("m",))


# --- aiq's own plugins ----------------------------------------------------------------------

def test_the_builtins_are_entry_points_of_aiq_and_nothing_else_makes_the_catalogue() -> None:
    points = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)
              if ep.dist is not None and ep.dist.name == "aiq"}
    assert points == {"pytorch": "schemas.builtins:PYTORCH",
                      "tensorflow": "schemas.builtins:TENSORFLOW",
                      "sklearn": "schemas.builtins:SKLEARN",
                      "diagnostic": "schemas.builtins:DIAGNOSTIC"}
    loaded, problems = installed_plugins()
    assert problems == []
    assert [lp.plugin for lp in loaded[:4]] == [builtins.PYTORCH, builtins.TENSORFLOW,
                                                 builtins.SKLEARN, builtins.DIAGNOSTIC]
    assert list(CATALOGUE)[:7] == ["pytorch-2.0", "pytorch-2.0-gpu", "pytorch-2.1",
                                   "pytorch-2.1-gpu", "tensorflow", "sklearn", "diagnostic"]
    assert CATALOGUE["sklearn"].source.startswith("aiq ")
    assert sorted(DATA_FREE_MODELS) == ["fail", "gpu_sim", "noop", "redis_io", "sleep"]
    assert "bert" in KNOWN_MODEL_TYPES and "xgboost" not in KNOWN_MODEL_TYPES


def test_the_builtins_bounds_are_checked_at_submit() -> None:
    body = {"model_type": "random_forest", "data_path": "d.csv"}
    for hp in ({"n_estimators": 5000, "max_depth": None, "n_jobs": -1},
               {"n_estimators": 1, "unknown_extra": "kept"}):
        assert TrainingRequest.model_validate({**body, "hyperparameters": hp})
    with pytest.raises(ValidationError) as info:
        TrainingRequest.model_validate({**body, "hyperparameters": {"n_estimators": 0,
                                                                    "n_jobs": 0}})
    errors = {e["loc"]: e for e in info.value.errors()}
    assert len(info.value.errors()) == 2  # one per parameter
    assert set(errors) == {("hyperparameters", "n_estimators"), ("hyperparameters", "n_jobs")}
    assert errors[("hyperparameters", "n_estimators")]["msg"] == (
        "should be an integer between 1 and 5000 for model type random_forest")


# --- the catalogue: installed, then announced -----------------------------------------------

def _catalogue(*announced: FrameworkPlugin, installed: tuple[LoadedPlugin, ...] = ()
               ) -> Catalogue:
    base = [LoadedPlugin(name, "aiq 0.1.0", p) for name, p in (
        ("sklearn", builtins.SKLEARN), ("diagnostic", builtins.DIAGNOSTIC))]
    state = Catalogue([*base, *installed])
    state.learn([LoadedPlugin(p.worker_types[0].name, "announced by team-plugin 1.0", p)
                 for p in announced])
    return state


def test_announced_types_are_added_and_installed_ones_win() -> None:
    hijack = plugin("sklearn", ("random_forest", "team_model"))  # an installed name
    state = _catalogue(plugin(gpu=True), hijack)
    types = state.tables.types
    assert types["team-cpu"].source == "announced by team-plugin 1.0"
    assert types["team-cpu"].install_command == "uv pip install 'team-plugin'"
    assert types["team-cpu-gpu"].device is Device.GPU  # the plugin's other types come along
    assert types["sklearn"].framework == "sklearn"  # installed wins
    assert state.tables.routes["team_model"] == ("team-cpu", "team-cpu-gpu")
    assert state.tables.routes["random_forest"] == ("sklearn", None)


def test_a_model_type_is_learned_only_where_its_route_serves_it() -> None:
    # routed to "sklearn", which is installed and does not serve it: left out
    state = _catalogue(plugin("sklearn", ("not_routable",)))
    assert "not_routable" not in state.tables.models


def test_learning_replaces_what_was_announced_and_counts_versions() -> None:
    state = _catalogue()
    before = state.version
    assert state.new_types([LoadedPlugin("team-cpu", "x", plugin())]) == ["team-cpu"]
    assert state.learn([LoadedPlugin("team-cpu", "x", plugin())]) is True
    assert state.version == before + 1 and "team_model" in state.tables.models
    assert state.learn([LoadedPlugin("team-cpu", "x", plugin())]) is False  # no change
    assert state.learn([]) is True  # gone from Redis: gone from the catalogue
    assert "team-cpu" not in state.tables.types


def test_an_installed_plugin_that_clashes_is_left_out_with_a_reason() -> None:
    clash = LoadedPlugin("copy", "copycat 1.0", plugin("sklearn", ("svm",)))
    state = _catalogue(installed=(clash,))
    assert state.tables.types["sklearn"].source == "aiq 0.1.0"
    assert any("copycat 1.0" in p and "left out" in p for p in state.problems)


def test_the_views_follow_the_process_catalogue() -> None:
    """CATALOGUE, ROUTES, KNOWN_MODEL_TYPES are live; a type set by code (benchmarks) counts."""
    wt = WorkerType("bench-sim", "diagnostic", "aiq", ">=0", Device.CPU, None,
                    frozenset({"noop"}))
    CATALOGUE["bench-sim"] = wt
    try:
        assert CATALOGUE["bench-sim"] is wt and route("noop", False, "bench-sim") == "bench-sim"
        STATE.learn([LoadedPlugin("team-cpu", "x", plugin())])
        assert "team_model" in KNOWN_MODEL_TYPES and ROUTES["team_model"][0] == "team-cpu"
        assert "bench-sim" in CATALOGUE  # kept across a refresh
    finally:
        STATE.learn([])
        del CATALOGUE["bench-sim"]
    assert "team_model" not in KNOWN_MODEL_TYPES and "bench-sim" not in CATALOGUE
    with pytest.raises(RoutingError, match="unknown worker type 'team-cpu'"):
        route("team_model", False, "team-cpu")
