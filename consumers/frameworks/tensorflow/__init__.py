"""TensorFlow framework: inception, mobilenet and efficientnet image classifiers (Keras).

Models are ``keras.applications`` built with ``weights=None`` (no hub downloads; an optional
``weights_path`` inside the data root seeds them) and trained from scratch with ``fit``. Progress
is reported every batch, so a cancel or an interrupt stops training at the next batch. Every
epoch ends with a checkpoint (weights + optimizer state) under ``<artifact_dir>/checkpoint``; a
job that runs again after its worker died resumes from it. The finished model is
``<artifact_dir>/model.keras`` (preprocessing included) plus ``metadata.json``.

TensorFlow is imported lazily (``models``), so this package imports without it. The steps
live in ``spec`` (hyperparameters), ``data``, ``models``, ``train`` and ``infer``.

Data: ``.npz`` with ``x`` (NxHxW or NxHxWxC) and ``y`` (N labels), a CSV of flattened pixels
plus a label column, or ``builtin:digits`` (scikit-learn's 8x8 digits).
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from consumers.data import resolve_data_path
from consumers.frameworks.base import FailJob, JobContext, Progress
from consumers.frameworks.tensorflow.data import Images, _subset, load_images, split
from consumers.frameworks.tensorflow.infer import infer
from consumers.frameworks.tensorflow.spec import (
    CHECKPOINT_DIR,
    FRAMEWORK,
    MODEL_FILE,
    _ignored,
    parse_spec,
)
from consumers.frameworks.tensorflow.train import _final_metrics, _Training, tf_job

__all__ = ["CHECKPOINT_DIR", "MODEL_FILE", "TensorflowFramework", "load_images", "parse_spec"]


class TensorflowFramework:
    """The ``tensorflow`` worker type's framework."""

    name = FRAMEWORK

    def version(self) -> str:
        import tensorflow as tf

        return str(tf.__version__)

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        spec = parse_spec(msg.model_type, dict(msg.hyperparameters))
        if not msg.data_path:
            raise FailJob("data_path is required for training", code="data_path_required")
        if spec.weights_path:
            resolve_data_path(ctx.data_root, spec.weights_path)  # fail before loading data
        progress("loading_data", percent=0, message=msg.data_path)
        images = _subset(load_images(ctx.data_root, msg.data_path, spec), spec.max_samples,
                         spec.seed)
        data = split(images, spec)
        progress("building_model", percent=5, message=f"{spec.model_type}, {len(data[0])} "
                 f"training images {list(images.shape)}, {len(images.classes)} classes")
        with tf_job() as tfm:
            run = _Training(ctx, spec, images, progress, tfm)
            run.resume()
            logs = run.fit(data)
            progress("saving", percent=92)
            result = self._result(ctx, run, data, _final_metrics(logs))
            run.save(self._metadata(ctx, images, result))
        progress("saving", percent=100, metrics=result["metrics"], message="model saved")
        return result

    def _result(self, ctx: JobContext, run: _Training, data: tuple[npt.NDArray[Any], ...],
                metrics: dict[str, float]) -> dict[str, Any]:
        msg = ctx.message
        return {
            "metrics": metrics, "history": run.history, "epochs": run.spec.epochs,
            "epochs_run": run.spec.epochs - run.start_epoch,
            "resumed_from_epoch": run.start_epoch or None,
            "n_train": len(data[0]), "n_test": len(data[2]),
            "input_shape": list(run.images.shape), "model_input_size": list(run.target),
            "classes": run.images.classes, "parameters": run.tfm.count_params(run.model),
            "model_type": msg.model_type, "model_id": msg.job_id, "framework": FRAMEWORK,
            "framework_version": self.version(), "artifact": ctx.artifact_name,
            "ignored_hyperparameters": _ignored(msg.model_type, msg.hyperparameters),
        }

    def _metadata(self, ctx: JobContext, images: Images, result: dict[str, Any]
                  ) -> dict[str, Any]:
        keys = ("framework", "framework_version", "model_type", "model_id", "input_shape",
                "model_input_size", "classes", "metrics", "epochs", "parameters")
        return {**{k: result[k] for k in keys}, "model_file": MODEL_FILE,
                "data_path": ctx.message.data_path,
                "hyperparameters": ctx.message.hyperparameters,
                "class_names": images.class_names, "label_name": images.label_name,
                "pixel_scale": images.pixel_scale}

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        return infer(ctx, progress, self.version())
