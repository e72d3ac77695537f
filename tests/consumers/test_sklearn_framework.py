"""The sklearn framework, data loading and artifacts, called directly (no Redis)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sklearn")

from consumers import artifacts
from consumers.data import load_inputs, load_tabular, resolve_data_path
from consumers.frameworks.base import FailJob, JobContext
from consumers.frameworks.sklearn import SklearnFramework
from schemas.records import JobMessage

FAST = {"random_forest": {"n_estimators": 30}, "svm": {}, "logistic_regression": {}}


class Recorder:
    """A Progress that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, stage: str, **kwargs: Any) -> None:
        self.calls.append((stage, kwargs))

    @property
    def stages(self) -> list[str]:
        out: list[str] = []
        for stage, _ in self.calls:
            if not out or out[-1] != stage:
                out.append(stage)
        return out


def _job_id() -> str:
    return f"job_{uuid.uuid4()}"


def _ctx(root: Path, **fields: Any) -> JobContext:
    fields.setdefault("job_id", _job_id())
    fields.setdefault("kind", "training")
    fields.setdefault("model_type", "random_forest")
    (root / "data").mkdir(exist_ok=True)
    return JobContext(message=JobMessage(**fields), data_root=root / "data",
                      artifact_root=root / "artifacts")


def _train(root: Path, model_type: str, data_path: str, **hp: Any) -> dict[str, Any]:
    ctx = _ctx(root, model_type=model_type, data_path=data_path, hyperparameters=hp)
    return SklearnFramework().train(ctx, Recorder())


def _infer(root: Path, model_id: str, **fields: Any) -> dict[str, Any]:
    ctx = _ctx(root, kind="inference", model_id=model_id, **fields)
    return SklearnFramework().infer(ctx, Recorder())


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sk")


@pytest.fixture(scope="module")
def trained(root: Path) -> dict[str, dict[str, Any]]:
    """Each model type trained once on builtin:digits."""
    hp = {"epochs": 1, "learning_rate": 0.001, "batch_size": 32}
    return {m: _train(root, m, "builtin:digits", **hp, **FAST[m]) for m in FAST}


# --- training and inference on real data ------------------------------------------------------

@pytest.mark.parametrize("model_type", sorted(FAST))
def test_train_digits_accuracy(trained: dict[str, dict[str, Any]], root: Path,
                               model_type: str) -> None:
    result = trained[model_type]
    assert result["metrics"]["accuracy"] >= 0.9
    assert result["metrics"]["f1_macro"] >= 0.9
    assert result["metrics"]["train_accuracy"] >= result["metrics"]["accuracy"] - 0.05
    assert result["n_features"] == 64 and result["classes"] == list(range(10))
    assert result["n_train"] + result["n_test"] == 1797
    assert result["framework"] == "sklearn" and result["model_type"] == model_type
    assert {"epochs", "learning_rate", "batch_size"} <= set(result["ignored_hyperparameters"])
    assert result["artifact"] == result["model_id"]  # relative to ARTIFACT_ROOT: no server path
    meta = json.loads((root / "artifacts" / result["artifact"] / "metadata.json").read_text())
    assert meta["framework_version"] == SklearnFramework().version()
    assert meta["feature_names"][0] == "pixel_0_0" and meta["metrics"] == result["metrics"]
    assert meta["created_at"] > 0


@pytest.mark.parametrize("model_type", sorted(FAST))
def test_infer_digits(root: Path, trained: dict[str, dict[str, Any]], model_type: str) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = digits.data[::60][:20]
    out = _infer(root, trained[model_type]["model_id"], model_type=model_type,
                 inputs=rows.tolist())
    assert out["n"] == len(rows) and out["model_id"] == trained[model_type]["model_id"]
    assert all(isinstance(p, int) for p in out["predictions"])
    hits = sum(p == y for p, y in zip(out["predictions"], digits.target[::60][:20], strict=True))
    assert hits >= 18
    assert ("probabilities" in out) == (model_type != "svm")
    if "probabilities" in out:
        assert len(out["probabilities"][0]) == 10
        assert abs(sum(out["probabilities"][0]) - 1) < 1e-3


def test_progress_stages_in_order(root: Path) -> None:
    ctx = _ctx(root, model_type="random_forest", data_path="builtin:iris",
               hyperparameters={"n_estimators": 20})
    progress = Recorder()
    result = SklearnFramework().train(ctx, progress)
    assert progress.stages == ["loading_data", "training", "evaluating", "saving"]
    percents = [kw["percent"] for _, kw in progress.calls]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100
    assert any(kw.get("steps") == 20 for _, kw in progress.calls)  # per-chunk forest progress
    assert result["metrics"]["accuracy"] >= 0.85


def test_train_and_infer_csv_with_label_column(root: Path) -> None:
    lines = ["a,b,label"] + [f"{i % 7},{(i * 3) % 11},{'big' if i % 7 > 3 else 'small'}"
                             for i in range(80)]
    _write(root / "data" / "sub" / "train.csv", "\n".join(lines) + "\n")
    result = _train(root, "logistic_regression", "sub/train.csv", C=100.0)
    assert result["classes"] == ["big", "small"] and result["n_features"] == 2
    assert result["metrics"]["accuracy"] >= 0.9
    # Inference from a CSV that still carries the label column (reordered): dropped by name.
    _write(root / "data" / "infer.csv", "label,b,a\nx,1,6\nx,2,0\n")
    out = _infer(root, result["model_id"], model_type="logistic_regression",
                 data_path="infer.csv")
    assert out["predictions"] == ["big", "small"]


def test_label_column_override_and_int_labels(root: Path) -> None:
    lines = ["cls,x,y"] + [f"{i % 2},{i % 2 + 0.1 * (i % 3)},{i}" for i in range(40)]
    _write(root / "data" / "override.csv", "\n".join(lines) + "\n")
    data = load_tabular(root / "data", "override.csv", "cls")
    assert data.feature_names == ["x", "y"] and data.y.tolist()[:2] == [0, 1]
    # Without the override the last column is the label (40 classes of one sample: refused).
    with pytest.raises(FailJob, match="single sample"):
        _train(root, "svm", "override.csv")


# --- data path security -----------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../etc/passwd", "../../../../etc/passwd", "/etc/passwd",
                                 "sub/../../outside.csv"])
def test_path_traversal_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    _write(tmp_path / "outside.csv", "a,label\n1,0\n")
    with pytest.raises(FailJob, match="outside the data root") as info:
        resolve_data_path(tmp_path / "data", bad)
    assert info.value.code == "data_path_outside_root"


def test_symlink_escaping_root_refused(tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret.csv", "a,label\n1,0\n")
    (tmp_path / "data").mkdir()
    os.symlink(secret, tmp_path / "data" / "link.csv")
    os.symlink(tmp_path, tmp_path / "data" / "dirlink")
    for bad in ("link.csv", "dirlink/secret.csv"):
        with pytest.raises(FailJob) as info:
            load_tabular(tmp_path / "data", bad)
        assert info.value.code == "data_path_outside_root"


def test_absolute_inside_root_and_missing(tmp_path: Path) -> None:
    inside = _write(tmp_path / "data" / "ok.csv", "a,label\n1,0\n")
    assert resolve_data_path(tmp_path / "data", str(inside)) == inside.resolve()
    with pytest.raises(FailJob, match="not found") as info:
        resolve_data_path(tmp_path / "data", "nope.csv")
    assert info.value.code == "data_not_found"


# --- malformed data and inputs ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "match"), [
    ("a,b,label\n1,2,0\n3,oops,1\n", r"line 3, column 'b': non-numeric value 'oops'"),
    ("a,b,label\n1,2,0\n3,4,0\n", r"at least 2 classes"),
    ("", r"empty"),
    ("a,b,label\n", r"no data rows"),
    ("a,b,label\n1,2,0\n3,4\n", r"line 3: 2 values but the header has 3 columns"),
    ("a,b,label\n1,nan,0\n3,4,1\n", r"not a finite number"),
])
def test_malformed_csv(tmp_path: Path, text: str, match: str) -> None:
    _write(tmp_path / "bad.csv", text)
    with pytest.raises(FailJob, match=match) as info:
        load_tabular(tmp_path, "bad.csv")
    assert info.value.code == "invalid_data"


def test_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(FailJob, match=r"builtin:mnist.*builtin:digits") as info:
        load_tabular(tmp_path, "builtin:mnist")
    assert info.value.code == "unknown_dataset"


def test_inference_wrong_column_count(root: Path, trained: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(FailJob, match="3 columns but the model expects 64") as info:
        _infer(root, trained["svm"]["model_id"], model_type="svm", inputs=[[1, 2, 3]])
    assert info.value.code == "invalid_inputs"


@pytest.mark.parametrize(("rows", "match"), [
    ([[1, 2], [3]], "row 1: 1 values"),
    ([[1, "x"]], "row 0, column 1: non-numeric"),
    ([[1, None]], "not a number"),
    ([], "empty"),
])
def test_bad_inline_inputs(tmp_path: Path, rows: list[list[Any]], match: str) -> None:
    with pytest.raises(FailJob, match=match):
        load_inputs(tmp_path, rows, n_features=2)


def test_inline_numeric_strings_accepted(tmp_path: Path) -> None:
    assert load_inputs(tmp_path, [["1.5", 2]], n_features=2).tolist() == [[1.5, 2.0]]


def test_model_not_found(root: Path) -> None:
    with pytest.raises(FailJob) as info:
        _infer(root, _job_id(), model_type="svm", inputs=[[1.0] * 64])
    assert info.value.code == "model_not_found"
    with pytest.raises(FailJob) as info:
        artifacts.load_model(artifacts.ArtifactStore(root / "artifacts"), "../data")
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(("hp", "name"), [
    ({"n_estimators": 0}, "n_estimators"),
    ({"n_estimators": "many"}, "n_estimators"),
    ({"n_estimators": True}, "n_estimators"),
    ({"max_depth": -1}, "max_depth"),
    ({"test_size": 1.5}, "test_size"),
])
def test_invalid_hyperparameters(root: Path, hp: dict[str, Any], name: str) -> None:
    with pytest.raises(FailJob, match=name) as info:
        _train(root, "random_forest", "builtin:iris", **hp)
    assert info.value.code == "invalid_hyperparameters"


@pytest.mark.parametrize(("model_type", "hp"), [
    ("svm", {"C": -1}), ("svm", {"kernel": "quantum"}), ("svm", {"gamma": 0}),
    ("logistic_regression", {"max_iter": 0}),
])
def test_invalid_model_hyperparameters(root: Path, model_type: str, hp: dict[str, Any]) -> None:
    with pytest.raises(FailJob) as info:
        _train(root, model_type, "builtin:iris", **hp)
    assert info.value.code == "invalid_hyperparameters"


def test_artifact_json_roundtrip(tmp_path: Path) -> None:
    artifacts.write_json_atomic(tmp_path / "x" / "m.json", {"a": [1, 2]})
    assert artifacts.read_json(tmp_path / "x" / "m.json") == {"a": [1, 2]}
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["m.json"]  # no temp files left


def test_a_symlink_loop_fails_without_showing_server_paths(root: Path) -> None:
    loop = root / "data" / "loop.csv"
    loop.parent.mkdir(parents=True, exist_ok=True)  # run alone, no earlier test made it
    loop.unlink(missing_ok=True)
    loop.symlink_to(loop)
    with pytest.raises(FailJob) as caught:
        _train(root, "random_forest", "loop.csv")
    assert caught.value.code == "invalid_data_path"
    assert "symlink loop" in str(caught.value) and str(root) not in str(caught.value)
