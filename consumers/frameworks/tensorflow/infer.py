"""Inference with a trained TensorFlow model: its metadata checked, the inputs shaped as the
model was trained, probabilities and predicted classes (and class names) per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers.frameworks.base import FailJob, JobContext, Progress
from consumers.frameworks.params import Params
from consumers.frameworks.tensorflow.data import load_inference_images
from consumers.frameworks.tensorflow.spec import FRAMEWORK, MODEL_FILE
from consumers.frameworks.tensorflow.train import tf_job


def infer(ctx: JobContext, progress: Progress, version: str) -> dict[str, Any]:
    """Predictions of a trained model for the job's inputs (inline images or a data path)."""
    msg = ctx.message
    if not msg.model_id:
        raise FailJob("model_id is required for inference", code="model_id_required")
    progress("loading_model", percent=0, message=msg.model_id)
    directory, meta = _tensorflow_model(ctx, msg.model_id)
    source = msg.inputs if msg.inputs is not None else msg.data_path
    if source is None:
        raise FailJob("inference needs inputs (images) or a data_path",
                         code="inputs_required")
    progress("loading_data", percent=20)
    shape = (int(meta["input_shape"][0]), int(meta["input_shape"][1]),
             int(meta["input_shape"][2]))
    x = load_inference_images(ctx.data_root, source, shape, meta.get("label_name"))
    batch_size = Params(msg.parameters).integer("batch_size", 64, 1, 65_536)
    progress("predicting", percent=50, message=f"{len(x)} images")
    with tf_job() as tfm:
        model = tfm.load_model(directory / MODEL_FILE)
        probabilities = tfm.predict(model, x, batch_size, progress)
    progress("predicting", percent=100)
    return {**_predictions(probabilities, meta), "n": len(x), "model_id": msg.model_id,
            "framework": FRAMEWORK, "framework_version": version}


def _tensorflow_model(ctx: JobContext, model_id: str) -> tuple[Path, dict[str, Any]]:
    """The model's local directory (the worker's cache of the store) and metadata."""
    directory, meta = ctx.artifacts.model(model_id, default_files=(MODEL_FILE,))
    if meta.get("framework") != FRAMEWORK:
        raise FailJob(f"model {model_id!r} was trained with framework "
                         f"{meta.get('framework')!r}, not {FRAMEWORK!r}",
                         code="framework_mismatch")
    if not (directory / MODEL_FILE).is_file():
        raise FailJob(f"model {model_id!r} not found: {MODEL_FILE} is missing",
                         code="model_not_found")
    return directory, meta


def _predictions(probabilities: npt.NDArray[np.float32], meta: dict[str, Any]
                 ) -> dict[str, Any]:
    classes = meta["classes"]
    index = probabilities.argmax(axis=1)
    out: dict[str, Any] = {"predictions": [classes[int(i)] for i in index], "classes": classes,
                           "probabilities": np.round(probabilities, 6).tolist()}
    names = meta.get("class_names")
    if names and len(names) == len(classes):
        out["predicted_names"] = [names[int(i)] for i in index]
    return out
