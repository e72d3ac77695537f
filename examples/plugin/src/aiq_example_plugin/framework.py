"""The example framework: two small numpy classifiers behind aiq's Framework interface.

A worker runs ``train`` and ``infer`` in a job thread. Both read their parameters again with
aiq's ``Params`` (the gateway checked them against the declaration already, but a job may come
from any producer), report progress through ``progress`` (which also raises when the job is
cancelled or the worker stops), read data with aiq's loaders (``builtin:digits`` or a CSV under
``DATA_ROOT``), and keep the model in the artifact store (``ctx.artifacts``), where inference
finds it by ``model_id`` on whatever worker runs it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers.data import Tabular, load_inputs, load_tabular
from consumers.frameworks.base import FailJob, JobContext, Progress
from consumers.frameworks.params import Params

FRAMEWORK = "numpy_example"
MODEL_FILE = "model.npz"
Array = npt.NDArray[np.float64]


def _split(data: Tabular, test_size: float, seed: int) -> tuple[npt.NDArray[np.intp], ...]:
    order = np.random.default_rng(seed).permutation(len(data.y))
    n_test = max(1, round(len(order) * test_size))
    if n_test >= len(order):
        raise FailJob(f"test_size {test_size} leaves no rows to train on", code="invalid_data")
    return order[n_test:], order[:n_test]


def _softmax(logits: Array) -> Array:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: Array = shifted / shifted.sum(axis=1, keepdims=True)
    return out


class Model:
    """Standardized features, then either a linear layer (softmax) or centroids."""

    def __init__(self, arrays: dict[str, Array]) -> None:
        self.arrays = arrays

    def scores(self, X: Array) -> Array:
        z = (X - self.arrays["mean"]) / self.arrays["std"]
        if "centroids" in self.arrays:
            distances = ((z[:, None, :] - self.arrays["centroids"][None]) ** 2).sum(axis=2)
            return _softmax(-distances)
        return _softmax(z @ self.arrays["weights"] + self.arrays["bias"])


def _standardize(X: Array) -> tuple[Array, Array]:
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    return mean, np.where(std > 1e-9, std, 1.0)


def _fit_softmax(z: Array, y: npt.NDArray[np.intp], k: int, p: Params,
                 progress: Progress, score: Any) -> dict[str, Array]:
    epochs = p.integer("epochs", 20, 1, 1_000)
    lr = p.number("learning_rate", 0.5, gt=0, le=10)
    batch = p.integer("batch_size", 64, 1, 65_536)
    l2 = p.number("l2", 1e-4, ge=0, le=10)
    rng = np.random.default_rng(p.integer("seed", 0, 0, 2**31 - 1))
    weights, bias, onehot = np.zeros((z.shape[1], k)), np.zeros(k), np.eye(k)[y]
    for epoch in range(1, epochs + 1):
        for rows in np.array_split(rng.permutation(len(y)), max(1, len(y) // batch)):
            grad = _softmax(z[rows] @ weights + bias) - onehot[rows]
            weights -= lr * (z[rows].T @ grad / len(rows) + l2 * weights)
            bias -= lr * grad.mean(axis=0)
        probs = _softmax(z @ weights + bias)
        loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
        arrays = {"weights": weights, "bias": bias}
        progress("training", epoch=epoch, epochs=epochs, percent=90 * epoch / epochs,
                 loss=loss, metrics={"accuracy": score(arrays)})
    return {"weights": weights, "bias": bias}


def _fit_centroids(z: Array, y: npt.NDArray[np.intp], k: int, p: Params,
                   progress: Progress, score: Any) -> dict[str, Array]:
    shrinkage = p.number("shrinkage", 0.0, ge=0, le=1)
    overall = z.mean(axis=0)
    centroids = np.stack([z[y == c].mean(axis=0) for c in range(k)])
    centroids = (1 - shrinkage) * centroids + shrinkage * overall
    arrays = {"centroids": centroids}
    progress("training", epoch=1, epochs=1, percent=90, metrics={"accuracy": score(arrays)})
    return arrays


_FITS = {"softmax_regression": _fit_softmax, "nearest_centroid": _fit_centroids}


class NumpyExampleFramework:
    """The ``numpy_example`` framework (worker type ``numpy-example``)."""

    name = FRAMEWORK

    def version(self) -> str:
        return str(np.__version__)

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        fit = _FITS.get(msg.model_type)
        if fit is None:
            raise FailJob(f"model type {msg.model_type!r} is not served by {FRAMEWORK}",
                          code="unsupported_model_type")
        p = Params(msg.hyperparameters)
        test_size = p.number("test_size", 0.2, gt=0, lt=1)
        seed = p.integer("seed", 0, 0, 2**31 - 1)
        if not msg.data_path:
            raise FailJob("data_path is required for training", code="data_path_required")
        progress("loading_data", percent=0, message=msg.data_path)
        data = load_tabular(ctx.data_root, msg.data_path, p.text("label_column"))
        classes, y = np.unique(data.y, return_inverse=True)
        train, test = _split(data, test_size, seed)
        mean, std = _standardize(data.X[train])
        z = (data.X - mean) / std

        def score(arrays: dict[str, Array]) -> float:
            model = Model({"mean": mean, "std": std, **arrays})
            return float((model.scores(data.X[test]).argmax(axis=1) == y[test]).mean())

        arrays = fit(z[train], y[train], len(classes), p, progress, score)
        accuracy = score(arrays)
        progress("saving", percent=95, metrics={"accuracy": accuracy})
        self._save(ctx, {"mean": mean, "std": std, **arrays}, data, classes, accuracy)
        return {"metrics": {"accuracy": accuracy}, "model_id": msg.job_id,
                "model_type": msg.model_type, "classes": classes.tolist(),
                "n_train": len(train), "n_test": len(test), "n_features": data.n_features,
                "framework": FRAMEWORK, "framework_version": self.version(),
                "artifact": ctx.artifact_name}

    def _save(self, ctx: JobContext, arrays: dict[str, Array], data: Tabular,
              classes: npt.NDArray[Any], accuracy: float) -> None:
        """The arrays, then the metadata (last: from then on the model is visible)."""
        model_id = ctx.message.job_id
        ctx.artifacts.write(model_id, MODEL_FILE, lambda fh: np.savez(fh, **arrays))
        ctx.artifacts.publish(model_id, {
            "framework": FRAMEWORK, "framework_version": self.version(),
            "model_type": ctx.message.model_type, "model_id": model_id,
            "classes": classes.tolist(), "class_names": data.class_names,
            "feature_names": data.feature_names, "n_features": data.n_features,
            "label_name": data.label_name, "metrics": {"accuracy": accuracy},
            "created_at": time.time(), "files": [MODEL_FILE]})

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        if not msg.model_id:
            raise FailJob("model_id is required for inference", code="model_id_required")
        progress("loading_model", percent=0, message=msg.model_id)
        directory, meta = ctx.artifacts.model(msg.model_id, default_files=(MODEL_FILE,))
        if meta.get("framework") != FRAMEWORK:
            raise FailJob(f"model {msg.model_id!r} was trained with framework "
                          f"{meta.get('framework')!r}, not {FRAMEWORK!r}",
                          code="framework_mismatch")
        with np.load(directory / MODEL_FILE) as saved:
            model = Model({name: saved[name] for name in saved.files})
        source = msg.inputs if msg.inputs is not None else msg.data_path
        if source is None:
            raise FailJob("inference needs inputs (rows) or a data_path", code="inputs_required")
        X = load_inputs(ctx.data_root, source, n_features=int(meta["n_features"]),
                        feature_names=meta.get("feature_names") or (),
                        label_name=meta.get("label_name"))
        progress("predicting", percent=50, message=f"{len(X)} rows")
        probs = model.scores(X)
        classes = meta["classes"]
        return {"predictions": [classes[i] for i in probs.argmax(axis=1).tolist()],
                "probabilities": probs.round(6).tolist(), "classes": classes, "n": len(X),
                "model_id": msg.model_id, "framework": FRAMEWORK}
