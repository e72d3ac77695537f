"""scikit-learn framework: random_forest, svm and logistic_regression classifiers.

Fitting (and scoring) runs in a child process (consumers/killable.py): one native ``fit`` call
does not come back to Python for as long as it takes, and cancel, timeout and drain must stop it
within a fraction of a second. Random forests grow in chunks of trees with ``warm_start`` so
progress is reported while training; the chunked forest is identical to one grown in a single
``fit`` for the same ``random_state``. Loading data and predicting run in the job's thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers import artifacts, killable
from consumers.data import Tabular, load_inputs, load_tabular
from consumers.frameworks.base import FailJob, JobContext, Progress
from consumers.frameworks.params import Params, bad

FRAMEWORK = "sklearn"
# General hyperparameters every request carries; they do not apply to these estimators.
GENERAL_HYPERPARAMETERS = frozenset({"epochs", "learning_rate", "batch_size"})
COMMON_HYPERPARAMETERS = frozenset({"test_size", "random_state", "label_column"})
FOREST_CHUNKS = 10
# Bounds of the cost parameters (docs/API.md lists them).
MAX_ESTIMATORS = 5_000
MAX_DEPTH = 1_000
MAX_ITER = 100_000
MAX_JOBS = 64
MAX_C = 1e6


def _gamma(hp: dict[str, Any]) -> str | float:
    value = hp.get("gamma", "scale")
    if value in ("scale", "auto"):
        return str(value)
    return Params(hp).number("gamma", 1.0, gt=0, le=MAX_C)


def _random_forest(hp: dict[str, Any], seed: int | None) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    n_jobs = Params(hp).integer("n_jobs", 1, -1, MAX_JOBS)
    if n_jobs == 0:
        raise bad("n_jobs", f"-1 or an integer between 1 and {MAX_JOBS}", 0)
    return RandomForestClassifier(
        n_estimators=Params(hp).integer("n_estimators", 100, 1, MAX_ESTIMATORS),
        max_depth=Params(hp).integer_or_none("max_depth", None, 1, MAX_DEPTH),
        random_state=seed, n_jobs=n_jobs, warm_start=True,
    )


def _svm(hp: dict[str, Any], seed: int | None) -> Any:
    from sklearn.svm import SVC

    return SVC(C=Params(hp).number("C", 10.0, gt=0, le=MAX_C), gamma=_gamma(hp),
               kernel=Params(hp).choice("kernel", "rbf", ("rbf", "linear", "poly", "sigmoid")),
               probability=Params(hp).flag("probability", False), random_state=seed)


def _logistic_regression(hp: dict[str, Any], seed: int | None) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=Params(hp).number("C", 1.0, gt=0, le=MAX_C),
                              max_iter=Params(hp).integer("max_iter", 1000, 1, MAX_ITER),
                              random_state=seed)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    build: Callable[[dict[str, Any], int | None], Any]
    params: frozenset[str]
    scaled: bool  # standardize features first (Pipeline with StandardScaler)


MODELS: dict[str, ModelSpec] = {
    "random_forest": ModelSpec(_random_forest,
                               frozenset({"n_estimators", "max_depth", "n_jobs"}), False),
    "svm": ModelSpec(_svm, frozenset({"C", "gamma", "kernel", "probability"}), True),
    "logistic_regression": ModelSpec(_logistic_regression, frozenset({"C", "max_iter"}), True),
}


def _spec(model_type: str) -> ModelSpec:
    if model_type not in MODELS:
        raise FailJob(f"model type {model_type!r} is not served by the sklearn framework; "
                         f"known: {', '.join(sorted(MODELS))}", code="unsupported_model_type")
    return MODELS[model_type]


def _common(hp: dict[str, Any]) -> tuple[float, int | None, str | None]:
    """``(test_size, random_state, label_column)``."""
    test_size = hp.get("test_size", 0.2)
    if isinstance(test_size, bool) or not isinstance(test_size, int | float) \
            or not 0 < test_size < 1:
        raise bad("test_size", "a fraction between 0 and 1 (exclusive)", test_size)
    label = hp.get("label_column")
    if label is not None and not isinstance(label, str):
        raise bad("label_column", "a column name", label)
    return (float(test_size), Params(hp).integer_or_none("random_state", 0, 0, 2**32 - 1),
            label)


def _split(data: Tabular, test_size: float, seed: int | None) -> list[npt.NDArray[Any]]:
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(data.y, return_counts=True)
    if counts.min() < 2:
        rare = classes[counts.argmin()].item()
        raise FailJob(f"class {rare!r} has a single sample; a stratified train/test split "
                         "needs at least 2 per class", code="invalid_data")
    try:
        parts: list[npt.NDArray[Any]] = train_test_split(
            data.X, data.y, test_size=test_size, random_state=seed, stratify=data.y)
    except ValueError as exc:
        raise FailJob(f"cannot split {len(data.y)} rows with test_size={test_size}: {exc}",
                         code="invalid_data") from exc
    return parts


def fit_and_score(model: Any, parts: list[npt.NDArray[Any]], progress: Any
                  ) -> tuple[Any, dict[str, float]]:
    """Fit on the training part and score both parts (run in a child: consumers/killable.py);
    forests grow in chunks, reporting ``training`` progress between chunks."""
    X, y = parts[0], parts[2]
    total = int(getattr(model, "n_estimators", 0) or 0)
    try:
        if not getattr(model, "warm_start", False) or total < 2:
            model.fit(X, y)
        else:
            step = max(1, math.ceil(total / FOREST_CHUNKS))
            for done in range(step, total + step, step):
                model.set_params(n_estimators=min(done, total))
                model.fit(X, y)
                progress("training", percent=10 + 70 * min(done, total) / total,
                         step=min(done, total), steps=total)
            model.set_params(warm_start=False)  # the saved model behaves like a plain forest
    except ValueError as exc:  # sklearn's input checks: a data problem, not transient
        raise FailJob(f"training failed: {exc}", code="training_failed") from None
    progress("evaluating", percent=80)
    return model, _metrics(model, parts)


def _build(model_type: str, hp: dict[str, Any], seed: int | None) -> Any:
    spec = _spec(model_type)
    estimator = spec.build(hp, seed)
    if not spec.scaled:
        return estimator
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), estimator)


def _metrics(model: Any, parts: list[npt.NDArray[Any]]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    X_train, X_test, y_train, y_test = parts
    predicted = model.predict(X_test)
    return {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "f1_macro": float(f1_score(y_test, predicted, average="macro")),
        "train_accuracy": float(accuracy_score(y_train, model.predict(X_train))),
    }


def _ignored(model_type: str, hp: dict[str, Any]) -> list[str]:
    used = MODELS[model_type].params | COMMON_HYPERPARAMETERS
    return sorted(k for k in hp if k not in used)


class SklearnFramework:
    """The ``sklearn`` worker type's framework."""

    name = FRAMEWORK

    def version(self) -> str:
        import sklearn

        return str(sklearn.__version__)

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        hp = dict(msg.hyperparameters)
        test_size, seed, label_column = _common(hp)
        model = _build(msg.model_type, hp, seed)  # validates hyperparameters before any I/O
        if not msg.data_path:
            raise FailJob("data_path is required for training", code="data_path_required")
        progress("loading_data", percent=0, message=msg.data_path)
        data = load_tabular(ctx.data_root, msg.data_path, label_column)
        parts = _split(data, test_size, seed)
        progress("training", percent=10, message=f"{len(parts[2])} rows, {data.n_features} "
                 "features")
        model, metrics = killable.run(fit_and_score, (model, parts), progress)
        progress("saving", percent=90, metrics=metrics)
        result = self._result(ctx, data, parts, metrics)
        artifacts.save_model(ctx.artifacts, msg.job_id, model, self._metadata(ctx, data, result))
        progress("saving", percent=100, metrics=metrics, message="model saved")
        return result

    def _result(self, ctx: JobContext, data: Tabular, parts: list[npt.NDArray[Any]],
                metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "metrics": metrics,
            "n_train": len(parts[2]),
            "n_test": len(parts[3]),
            "n_features": data.n_features,
            "classes": np.unique(data.y).tolist(),
            "model_type": ctx.message.model_type,
            "model_id": ctx.message.job_id,
            "framework": FRAMEWORK,
            "framework_version": self.version(),
            "artifact": ctx.artifact_name,
            "ignored_hyperparameters": _ignored(ctx.message.model_type,
                                                ctx.message.hyperparameters),
        }

    def _metadata(self, ctx: JobContext, data: Tabular, result: dict[str, Any]) -> dict[str, Any]:
        return {
            "framework": FRAMEWORK,
            "framework_version": result["framework_version"],
            "model_type": ctx.message.model_type,
            "model_id": ctx.message.job_id,
            "data_path": ctx.message.data_path,
            "hyperparameters": ctx.message.hyperparameters,
            "feature_names": data.feature_names,
            "n_features": data.n_features,
            "label_name": data.label_name,
            "classes": result["classes"],
            "class_names": data.class_names,
            "metrics": result["metrics"],
        }

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        if not msg.model_id:
            raise FailJob("model_id is required for inference", code="model_id_required")
        progress("loading_model", percent=0, message=msg.model_id)
        model, meta = artifacts.load_model(ctx.artifacts, msg.model_id)
        if meta.get("framework") != FRAMEWORK:
            raise FailJob(f"model {msg.model_id!r} was trained with framework "
                             f"{meta.get('framework')!r}, not {FRAMEWORK!r}",
                             code="framework_mismatch")
        source = msg.inputs if msg.inputs is not None else msg.data_path
        if source is None:
            raise FailJob("inference needs inputs (rows) or a data_path",
                             code="inputs_required")
        progress("loading_data", percent=20)
        X = load_inputs(ctx.data_root, source, n_features=int(meta["n_features"]),
                        feature_names=meta.get("feature_names") or (),
                        label_name=meta.get("label_name"))
        progress("predicting", percent=50, message=f"{len(X)} rows")
        result = self._predict(model, X, meta)
        progress("predicting", percent=100)
        return {**result, "n": len(X), "model_id": msg.model_id, "framework": FRAMEWORK,
                "framework_version": self.version()}

    @staticmethod
    def _predict(model: Any, X: npt.NDArray[np.float64], meta: dict[str, Any]) -> dict[str, Any]:
        predictions = model.predict(X)
        out: dict[str, Any] = {"predictions": predictions.tolist(), "classes": meta["classes"]}
        names = meta.get("class_names")
        if names and meta["classes"] == list(range(len(names))):
            out["predicted_names"] = [names[int(p)] for p in predictions]
        if hasattr(model, "predict_proba"):
            out["probabilities"] = np.round(model.predict_proba(X), 6).tolist()
        return out
