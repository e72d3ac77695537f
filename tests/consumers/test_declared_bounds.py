"""The bounds a built-in plugin declares (checked by the gateway at submit) are the bounds its
framework enforces when it runs (``Params``): probed at and around every bound, for the
scikit-learn framework (the one installed in the main environment)."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.frameworks.base import FailJob
from consumers.frameworks.sklearn import _build, _common
from schemas.builtins import SKLEARN
from schemas.plugins import Parameter


def _probes(p: Parameter) -> list[Any]:
    values: list[Any] = [*p.choices, None, True, "x", 0, -1, 1]
    for bound in (p.gt, p.ge, p.lt, p.le):
        if bound is not None:
            step = 1 if p.type == "int" else bound * 1e-6 or 1e-9
            values += [bound - step, bound, bound + step]
    return values


def _runs(model_type: str, name: str, value: Any) -> bool:
    hp = {name: value}
    try:
        _, seed, _ = _common(hp)
        _build(model_type, hp, seed)
    except FailJob as exc:
        assert exc.code == "invalid_hyperparameters" and repr(name) in str(exc)
        return False
    return True


@pytest.mark.parametrize("model", SKLEARN.model_types, ids=lambda m: m.name)
def test_declared_bounds_match_the_frameworks_own(model: Any) -> None:
    for p in model.parameters:
        if p.type == "str" and not p.choices:
            continue  # a column name: any string
        for value in _probes(p):
            declared = p.problem(value) is None
            assert declared == _runs(model.name, p.name, value), (p.name, value, p.rule())
