"""Routing (seed): framework_override, then model type + requires_gpu, then pytorch-2.1."""

from __future__ import annotations

import pytest

from schemas.catalogue import CATALOGUE, DEFAULT_WORKER_TYPE, RoutingError, route


@pytest.mark.parametrize(
    ("model_type", "gpu", "expected"),
    [
        ("bert", False, "pytorch-2.1"),  # the seed's four examples
        ("resnet", True, "pytorch-2.0-gpu"),
        ("inception", False, "tensorflow"),
        ("random_forest", False, "sklearn"),
        ("gpt", True, "pytorch-2.1-gpu"),
        ("noop", False, "diagnostic"),
    ],
)
def test_seed_routing(model_type: str, gpu: bool, expected: str) -> None:
    assert route(model_type, gpu) == expected


def test_override_wins_and_is_checked() -> None:
    assert route("bert", False, "pytorch-2.0") == "pytorch-2.0"
    with pytest.raises(RoutingError, match="does not serve"):
        route("random_forest", False, "pytorch-2.0")
    with pytest.raises(RoutingError, match="unknown worker type"):
        route("bert", False, "pytorch-9")
    with pytest.raises(RoutingError, match="CPU-only"):
        route("bert", True, "pytorch-2.1")


def test_gpu_request_without_gpu_type_is_refused() -> None:
    with pytest.raises(RoutingError, match="no GPU worker type"):
        route("inception", True)


def test_default_and_catalogue_consistency() -> None:
    assert route("something_new") == DEFAULT_WORKER_TYPE == "pytorch-2.1"
    for wt in CATALOGUE.values():
        for model_type in wt.model_types:
            assert route(model_type, False, wt.name) == wt.name if wt.device == "cpu" else True
