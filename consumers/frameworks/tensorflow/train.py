"""Training a TensorFlow job: one Keras session per job (cleared when the last running job
ends), a checkpoint (weights + optimizer state) at the end of every epoch, resumed from when
the job runs again after its worker died, and progress reported every batch."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy.typing as npt

from consumers.artifact_store import ArtifactStore
from consumers.data import open_data
from consumers.frameworks.base import FailJob, JobContext, Progress
from consumers.frameworks.params import bad
from consumers.frameworks.tensorflow.data import Images
from consumers.frameworks.tensorflow.spec import CHECKPOINT_DIR, MIN_SIZE, MODEL_FILE, TrainSpec

# -- TensorFlow sessions -------------------------------------------------------------------------

_active_jobs = 0
_session_lock = threading.Lock()


@contextlib.contextmanager
def tf_job() -> Iterator[ModuleType]:
    """The ``models`` module for one job; the Keras session is cleared when the last running
    job ends (clearing it under a job still running in another thread would break that job)."""
    global _active_jobs  # noqa: PLW0603 - one process-wide count of running TF jobs
    from consumers.frameworks.tensorflow import models as tf_models

    with _session_lock:
        _active_jobs += 1
    try:
        yield tf_models
    finally:
        with _session_lock:
            _active_jobs -= 1
            if _active_jobs == 0:
                tf_models.clear_session()
                gc.collect()


_EPOCH_DIR = re.compile(r"^epoch-[0-9]{4,}$")

# -- checkpoints ---------------------------------------------------------------------------------

class Checkpoints:
    """``<job_id>/checkpoint/epoch-NNNN/`` directories and ``latest.json`` pointing at the
    newest complete one, locally and in the artifact store: a checkpoint is written to a local
    temp dir, renamed, uploaded file by file, and only then named by ``latest.json`` (replaced
    atomically, uploaded last), so a crash at any point leaves a usable checkpoint."""

    def __init__(self, store: ArtifactStore, job_id: str, signature: dict[str, Any]) -> None:
        self.store, self.job_id = store, job_id
        self.root = store.local_path(job_id, CHECKPOINT_DIR)
        self.signature = signature

    def _name(self, name: str) -> str:
        return f"{CHECKPOINT_DIR}/{name}"

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint of this same job configuration, if any (fetched from the
        store: the worker that wrote it may have died)."""
        try:
            state = self.store.read_json(self.job_id, self._name("latest.json"))
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or state.get("signature") != self.signature:
            return None
        name = str(state.get("dir", ""))
        if not _EPOCH_DIR.fullmatch(name) or not self.store.pull_tree(self.job_id,
                                                                      self._name(name)):
            return None
        directory = self.root / name
        return (directory, state) if directory.is_dir() else None

    def save(self, tfm: ModuleType, model: Any, opt: Any, epoch: int,
             history: list[dict[str, float]]) -> None:
        name = f"epoch-{epoch:04d}"
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            tfm.write_checkpoint(model, opt, tmp)
            shutil.rmtree(self.root / name, ignore_errors=True)
            os.replace(tmp, self.root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.store.push_tree(self.job_id, self._name(name))
        self.store.write_json(self.job_id, self._name("latest.json"), {
            "epoch": epoch, "dir": name, "history": history, "signature": self.signature})
        stale = {old.name for old in self.root.iterdir() if old.is_dir() and old.name != name}
        stale.add(f"epoch-{epoch - 1:04d}")  # the previous one, also when another worker wrote it
        for old in sorted(stale):
            if _EPOCH_DIR.fullmatch(old):
                self.store.remove(self.job_id, self._name(old))
            else:  # a temp dir a crash left behind (never uploaded)
                shutil.rmtree(self.root / old, ignore_errors=True)

    def clear(self) -> None:
        self.store.remove(self.job_id, CHECKPOINT_DIR)


# -- training ------------------------------------------------------------------------------------

# Pixels one training step may hold (batch_size x height x width at the model's input): a step
# is where a job sees a cancel or its timeout, so on a CPU it must take seconds (an inception
# step of 256 images of 75x75, 1.4 M pixels, took up to 5.6 s to see a cancel here).
MAX_STEP_PIXELS = 2**19


def _check_step_size(spec: TrainSpec, target: tuple[int, int]) -> None:
    per_image = target[0] * target[1]
    if spec.batch_size * per_image > MAX_STEP_PIXELS:
        raise bad("batch_size", f"at most {max(1, MAX_STEP_PIXELS // per_image)} at "
                  f"{target[0]}x{target[1]} input (one step holds at most {MAX_STEP_PIXELS:,} "
                  "pixels: that is where cancel and timeout take effect)", spec.batch_size)


def _target(spec: TrainSpec, shape: tuple[int, int, int]) -> tuple[int, int]:
    if spec.image_size is not None:
        return spec.image_size, spec.image_size
    minimum = MIN_SIZE[spec.model_type]
    return max(shape[0], minimum), max(shape[1], minimum)


class _Training:
    """One training run: build or resume, fit with per-batch progress and per-epoch
    checkpoints, save."""

    def __init__(self, ctx: JobContext, spec: TrainSpec, images: Images, progress: Progress,
                 tfm: ModuleType) -> None:
        self.ctx, self.spec, self.images, self.progress, self.tfm = ctx, spec, images, progress, tfm
        self.target = _target(spec, images.shape)
        _check_step_size(spec, self.target)
        msg = ctx.message
        self.checkpoints = Checkpoints(ctx.artifacts, msg.job_id, {
            "model_type": msg.model_type, "data_path": msg.data_path,
            "hyperparameters": msg.hyperparameters, "input_shape": list(images.shape),
            "classes": images.classes})
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.model, self.opt = self._build()

    def _build(self) -> tuple[Any, Any]:
        images, spec = self.images, self.spec
        self.tfm.set_seed(spec.seed)
        model = self.tfm.build_model(spec.model_type, images.shape, len(images.classes),
                                     target=self.target, pixel_scale=images.pixel_scale,
                                     alpha=spec.alpha, bn_momentum=spec.bn_momentum)
        if spec.weights_path:
            self._load_weights(model, spec.weights_path)
        opt = self.tfm.optimizer(spec.optimizer, spec.learning_rate)
        self.tfm.compile_model(model, opt)
        return model, opt

    def _load_weights(self, model: Any, weights_path: str) -> None:
        """Keras opens weights by name, so it gets a private copy of what was opened safely
        (``open_data``: a file swapped for a symlink after the check cannot escape the root)."""
        suffix = Path(weights_path).suffix
        with open_data(self.ctx.data_root, weights_path) as src, \
                tempfile.TemporaryDirectory(prefix="aiq-weights-") as tmp:
            copy = Path(tmp) / f"weights{suffix}"
            with copy.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            self.tfm.load_weights(model, copy, shown=weights_path)

    def resume(self) -> None:
        """Continue from this job's last checkpoint when there is one."""
        found = self.checkpoints.latest()
        if found is None:
            self.checkpoints.clear()  # a stale checkpoint of another configuration
            return
        directory, state = found
        try:
            self.tfm.restore_checkpoint(self.model, self.opt, directory)
        except (ValueError, OSError) as exc:
            self.checkpoints.clear()
            self.model, self.opt = self._build()  # partly restored: start over cleanly
            self.progress("training", percent=10, message=f"checkpoint unusable ({exc}); "
                          "training from scratch")
            return
        self.start_epoch = min(int(state["epoch"]), self.spec.epochs)
        self.history = list(state.get("history") or [])
        self.progress("resumed", percent=10 + 80 * self.start_epoch / self.spec.epochs,
                      message=f"resumed from checkpoint after epoch {self.start_epoch}",
                      epoch=self.start_epoch, epochs=self.spec.epochs)

    def _epoch_done(self, epoch: int, logs: dict[str, float]) -> None:
        self.history.append({"epoch": epoch, **{k: round(v, 6) for k, v in logs.items()}})
        self.checkpoints.save(self.tfm, self.model, self.opt, epoch, self.history)
        metrics = {k: round(v, 6) for k, v in logs.items() if k != "loss"}
        self.progress("training", percent=10 + 80 * epoch / self.spec.epochs, epoch=epoch,
                      epochs=self.spec.epochs, loss=logs.get("loss"), metrics=metrics,
                      message=f"epoch {epoch}/{self.spec.epochs} done, checkpoint saved")

    def fit(self, data: tuple[npt.NDArray[Any], ...]) -> dict[str, float]:
        spec = self.spec
        steps = max(1, math.ceil(len(data[0]) / spec.batch_size))
        callback = self.tfm.JobCallback(self.progress, spec.epochs, steps, self._epoch_done)
        before = len(self.history)
        try:
            self.tfm.fit(self.model, data, batch_size=spec.batch_size, epochs=spec.epochs,
                         initial_epoch=self.start_epoch, callback=callback)
        except (ValueError, TypeError) as exc:  # keras' input checks: not transient
            raise FailJob(f"training failed: {str(exc)[:500]}",
                             code="training_failed") from exc
        if len(self.history) > before:
            last = self.history[-1]
            return {k: last[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                    if k in last}
        return self.tfm.evaluate(self.model, data[2], data[3], spec.batch_size)  # type: ignore[no-any-return]

    def save(self, metadata: dict[str, Any]) -> None:
        store, job_id = self.ctx.artifacts, self.ctx.message.job_id
        self.tfm.save_model(self.model, store.local_path(job_id, MODEL_FILE))
        store.push(job_id, MODEL_FILE)
        store.publish(job_id, {**metadata, "files": [MODEL_FILE]})  # visible from now on
        self.checkpoints.clear()


def _final_metrics(logs: dict[str, float]) -> dict[str, float]:
    names = {"val_accuracy": "accuracy", "val_loss": "loss", "accuracy": "train_accuracy",
             "loss": "train_loss"}
    return {names[k]: float(v) for k, v in logs.items() if k in names}


