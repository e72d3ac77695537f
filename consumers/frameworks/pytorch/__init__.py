"""PyTorch framework: bert, transformer, gpt, resnet, vgg and alexnet, built from configs.

Training runs in the calling (executor) thread: shuffled mini-batches with AdamW, a progress
event per step, held-out evaluation and an atomic checkpoint every epoch (``pytorch.train``). A
reclaimed job (its worker died) resumes from its checkpoint. The saved model is
``model.pt`` (state_dict), ``vocab.json`` for language models and ``metadata.json`` (written
last) holding the config that rebuilds the architecture. Inference lives in ``pytorch.infer``.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import torch

from consumers.artifact_store import StoredFile
from consumers.data import open_data
from consumers.frameworks.base import CudaOutOfMemory, FailJob, JobContext, Progress
from consumers.frameworks.params import Params, bad
from consumers.frameworks.pytorch import infer as torch_infer
from consumers.frameworks.pytorch.data import load_images
from consumers.frameworks.pytorch.models import (
    architecture,
    build_model,
    resolve_config,
)
from consumers.frameworks.pytorch.train import (
    CHECKPOINT_FILE,
    FitResult,
    Trainer,
    discard_checkpoint,
    fit,
)
from consumers.textdata import Vocab, encode, load_text

FRAMEWORK = "pytorch"
MODEL_FILE = torch_infer.MODEL_FILE
VOCAB_FILE = torch_infer.VOCAB_FILE
COMMON = frozenset({"epochs", "learning_rate", "batch_size", "weight_decay", "test_size",
                    "seed", "random_state", "device", "threads", "weights_path",
                    "label_column", "text_column"})
# Hyperparameters that do not change what is trained (a resumed job may run elsewhere).
_PLACEMENT = frozenset({"device", "threads"})
# What one training step may cost on a CPU: a step is where a job sees a cancel or its timeout,
# so it must take seconds, not minutes. Text: floating-point operations of a transformer step
# (forward and backward, 6 x tokens x layers x (12 h^2 + L h)), 6e10 is ~2 s on one busy core.
# Images: samples x pixels x width^2 (x blocks, resnet). A GPU step of the same size takes
# milliseconds; GPU admission bounds it by memory instead.
MAX_CPU_STEP = {"text": 6e10, "image": 2.0**29}


def device_for(options: dict[str, Any], ctx: JobContext) -> torch.device:
    """The one device rule: ``device`` auto (default) picks CUDA when a GPU is visible. The
    worker's ``device`` (cpu, cuda, or ``cuda:<index>`` chosen by GPU admission) is the
    default and names the GPU."""
    assigned = str(ctx.extra.get("device", "auto"))
    value = options.get("device", assigned.partition(":")[0])
    if value not in ("auto", "cpu", "cuda"):
        raise bad("device", "one of auto, cpu, cuda", value)
    if value != "cpu" and torch.cuda.is_available():
        return torch.device(assigned if assigned.startswith("cuda:") else "cuda")
    if value == "cuda":
        raise FailJob("device 'cuda' was requested but this worker sees no GPU",
                         code="invalid_hyperparameters")
    return torch.device("cpu")


def limit_threads(options: dict[str, Any], device: torch.device) -> None:
    """CPU jobs share the worker's cores with its other slots and processes: by default
    min(2, cores // 2) intra-op threads. Oversubscribed OpenMP threads spin: on a 2-core machine
    with one core busy, 2 threads made a small ResNet 20-30x slower than 1.
    (``torch.set_num_threads`` is process-wide; the last job to start sets it.)"""
    threads = Params(options).integer("threads", _default_threads(), 1, 256)
    if device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _default_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, (cores or 1) // 2))


_OOM_SIGNS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def _out_of_memory(exc: RuntimeError) -> bool:
    """The caching allocator's OutOfMemoryError, or the same failure met by the CUDA runtime,
    cuBLAS or cuDNN allocating on their own."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(
        sign in str(exc) for sign in _OOM_SIGNS)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True, slots=True)
class Settings:
    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float
    test_size: float
    seed: int
    device: torch.device


def _settings(hp: dict[str, Any], ctx: JobContext) -> Settings:
    p = Params(hp)
    seed_default = p.integer("random_state", 0, 0, 2**31 - 1)
    return Settings(
        epochs=p.integer("epochs", 5, 1, 10_000),
        learning_rate=p.number("learning_rate", 1e-3, gt=0.0, le=10.0),
        batch_size=p.integer("batch_size", 32, 1, 65_536),
        weight_decay=p.number("weight_decay", 0.01, ge=0.0, le=10.0),
        test_size=p.number("test_size", 0.2, gt=0.0, le=0.9),
        seed=p.integer("seed", seed_default, 0, 2**31 - 1),
        device=device_for(hp, ctx),
    )


def step_cost(cfg: dict[str, Any], batch_size: int) -> float:
    """What one training step costs, in the units of ``MAX_CPU_STEP``."""
    if cfg["family"] == "image":
        depth = cfg.get("blocks", 1)  # resnet: residual blocks at full width
        return float(batch_size * cfg["image_size"] ** 2 * cfg["width"] ** 2 * depth)
    length, hidden = int(cfg["max_length"]), int(cfg["hidden_size"])
    layers = int(cfg["num_layers"])
    return 6.0 * batch_size * length * layers * (12 * hidden**2 + length * hidden)


def _check_step_size(cfg: dict[str, Any], s: Settings) -> None:
    family = "image" if cfg["family"] == "image" else "text"
    limit = MAX_CPU_STEP[family]
    if s.device.type != "cpu" or step_cost(cfg, s.batch_size) <= limit:
        return
    most = max(1, int(limit // step_cost(cfg, 1)))
    shape = (f"image_size {cfg['image_size']} and width {cfg['width']}" if family == "image"
             else f"max_length {cfg['max_length']}, hidden_size {cfg['hidden_size']} and "
             f"num_layers {cfg['num_layers']}")
    raise bad("batch_size", f"at most {most} on a CPU with {shape} (one step must stay within "
              "seconds: that is where cancel and timeout take effect)", s.batch_size)


@dataclass(slots=True)
class Prepared:
    """Tensors for the trainer plus everything inference needs (``meta``)."""

    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]
    n_classes: int
    size: int  # input channels (image) or vocabulary size (text, lm)
    meta: dict[str, Any]
    vocab: Vocab | None = None


def _split(y: npt.NDArray[Any] | None, n: int, s: Settings) -> tuple[npt.NDArray[np.intp], ...]:
    """Train/test indices, stratified by ``y`` when given."""
    from sklearn.model_selection import train_test_split

    try:
        parts: list[npt.NDArray[np.intp]] = train_test_split(
            np.arange(n), test_size=s.test_size, random_state=s.seed, stratify=y)
    except ValueError as exc:
        raise FailJob(f"cannot split {n} samples with test_size={s.test_size}: {exc}",
                         code="invalid_data") from exc
    return tuple(parts)


def _classes(y: npt.NDArray[Any]) -> tuple[list[Any], npt.NDArray[np.int64]]:
    classes, index = np.unique(y, return_inverse=True)
    return classes.tolist(), index.astype(np.int64)


def _prepare_images(ctx: JobContext, hp: dict[str, Any], cfg: dict[str, Any],
                    s: Settings) -> Prepared:
    images = load_images(ctx.data_root, ctx.message.data_path or "")
    assert images.y is not None
    c, h, w = images.shape
    size = Params(hp).integer("image_size", min(h, w), 4, 1024)
    classes, y = _classes(images.y)
    train, test = _split(y, len(y), s)
    x = torch_infer.resize(torch.from_numpy(images.x), size)
    mean = x[torch.from_numpy(train)].mean(dim=(0, 2, 3))
    std = x[torch.from_numpy(train)].std(dim=(0, 2, 3)).clamp_min(1e-6)
    x = (x - mean[None, :, None, None]) / std[None, :, None, None]
    cfg["image_size"] = size
    yt = torch.from_numpy(y)
    meta = {"input_shape": [c, h, w], "image_size": size, "mean": mean.tolist(),
            "std": std.tolist(), "classes": classes, "class_names": images.class_names}
    return Prepared((x[train], yt[train]), (x[test], yt[test]), len(classes), c, meta)


def _prepare_text(ctx: JobContext, hp: dict[str, Any], cfg: dict[str, Any],
                  s: Settings) -> Prepared:
    causal = architecture(ctx.message.model_type).family == "lm"
    table = load_text(ctx.data_root, ctx.message.data_path or "", labelled=not causal,
                      text_column=_column(hp, "text_column"),
                      label_column=_column(hp, "label_column"))
    labels = None if causal or table.labels is None else _classes(np.asarray(table.labels))
    train, test = _split(None if labels is None else labels[1], len(table.texts), s)
    vocab = Vocab.build([table.texts[i] for i in train])
    ids, mask = (torch.from_numpy(a) for a in encode(vocab, table.texts, cfg["max_length"],
                                                     causal=causal))
    meta: dict[str, Any] = {"max_length": cfg["max_length"], "text_column": table.text_column}
    if labels is None:
        return Prepared((ids[train], mask[train]), (ids[test], mask[test]), 0, len(vocab),
                        meta, vocab)
    yt = torch.from_numpy(labels[1])
    meta["classes"] = labels[0]
    return Prepared((ids[train], mask[train], yt[train]), (ids[test], mask[test], yt[test]),
                    len(labels[0]), len(vocab), meta, vocab)


def _column(hp: dict[str, Any], name: str) -> str | None:
    value = hp.get(name)
    if value is not None and not isinstance(value, str):
        raise bad(name, "a column name", value)
    return value


def _load_weights(model: torch.nn.Module, ctx: JobContext, hp: dict[str, Any],
                  device: torch.device) -> dict[str, Any] | None:
    """Optional initial weights: a state_dict (or a checkpoint with ``model``) in the data root."""
    path = hp.get("weights_path")
    if path is None:
        return None
    if not isinstance(path, str):
        raise bad("weights_path", "a path under the data root", path)
    try:
        with open_data(ctx.data_root, path) as fh:
            state = torch.load(fh, map_location=device, weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, OSError, AttributeError, TypeError, ValueError) as exc:
        raise FailJob(f"weights_path {path!r} does not fit this model: {exc}"[:800],
                         code="invalid_data") from exc
    return {"path": path, "missing_keys": len(missing), "unexpected_keys": len(unexpected)}


def _fingerprint(ctx: JobContext, cfg: dict[str, Any], prep: Prepared) -> str:
    """What must match for a checkpoint to be resumed."""
    hp = {k: v for k, v in ctx.message.hyperparameters.items() if k not in _PLACEMENT}
    blob = orjson.dumps({"model_type": ctx.message.model_type, "data_path": ctx.message.data_path,
                         "hp": hp, "cfg": cfg, "n": len(prep.train[0]), "size": prep.size},
                        option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()


class PytorchFramework:
    """The ``pytorch-*`` worker types' framework."""

    name = FRAMEWORK

    def version(self) -> str:
        return str(torch.__version__)

    def train(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        hp = dict(msg.hyperparameters)
        cfg = {"family": architecture(msg.model_type).family,
               **resolve_config(msg.model_type, hp)}  # validates before any I/O
        s = _settings(hp, ctx)
        if not msg.data_path:
            raise FailJob("data_path is required for training", code="data_path_required")
        limit_threads(hp, s.device)
        cuda = s.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(s.device)
        oom = None
        try:
            result = self._train(ctx, progress, hp, cfg, s)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            if not _out_of_memory(exc):
                release(s.device)
                raise
            oom = (str(exc).splitlines() or [""])[0][:500]
        except BaseException:
            release(s.device)
            raise
        # Out of the except clause, the OOM's traceback (it holds the job's tensors) is gone,
        # so the cache can really be emptied.
        release(s.device)
        if oom is not None:
            raise CudaOutOfMemory(f"CUDA out of memory with batch_size={s.batch_size}: {oom}")
        if cuda:  # what the caching allocator took from the device at most: GPU admission
            # learns it (a process-wide figure: jobs sharing the device count each other's)
            result["gpu_peak_mb"] = int(torch.cuda.max_memory_reserved(s.device)) // 2**20
        return result

    def _train(self, ctx: JobContext, progress: Progress, hp: dict[str, Any],
               cfg: dict[str, Any], s: Settings) -> dict[str, Any]:
        progress("loading_data", percent=0, message=ctx.message.data_path or "")
        prepare = _prepare_images if cfg["family"] == "image" else _prepare_text
        prep = prepare(ctx, hp, cfg, s)
        _check_step_size(cfg, s)
        cfg["seed"] = s.seed
        model = build_model(ctx.message.model_type, cfg, prep.n_classes, prep.size).to(s.device)
        weights = _load_weights(model, ctx, hp, s.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate,
                                      weight_decay=s.weight_decay)
        trainer = Trainer(model, optimizer, cfg["family"], s.device, prep.train, prep.test,
                          s.epochs, s.batch_size,
                          StoredFile(ctx.artifacts, ctx.message.job_id, CHECKPOINT_FILE),
                          _fingerprint(ctx, cfg, prep))
        trainer.generator.manual_seed(s.seed)  # shuffling
        torch.manual_seed(s.seed)  # dropout (process-wide: reproducible one job at a time)
        progress("training", percent=5, message=f"{len(prep.train[0])} training / "
                 f"{len(prep.test[0])} held-out samples on {s.device.type}")
        fitted = fit(trainer, progress)
        progress("saving", percent=96, metrics=fitted.metrics)
        result = self._result(ctx, cfg, prep, fitted, s, weights)
        self._save(ctx, model, prep, cfg, result)
        discard_checkpoint(trainer)
        progress("saving", percent=100, metrics=fitted.metrics, message="model saved")
        return result

    def _result(self, ctx: JobContext, cfg: dict[str, Any], prep: Prepared, fitted: FitResult,
                s: Settings, weights: dict[str, Any] | None) -> dict[str, Any]:
        msg = ctx.message
        used = COMMON | architecture(msg.model_type).params
        return {
            "metrics": fitted.metrics, "history": fitted.history,
            "epochs": s.epochs, "epochs_run": fitted.epochs_run,
            "resumed_from_epoch": fitted.resumed_from_epoch,
            "n_train": len(prep.train[0]), "n_test": len(prep.test[0]),
            **({"classes": prep.meta["classes"]} if "classes" in prep.meta else {}),
            "config": cfg, "device": s.device.type, "weights": weights,
            "model_type": msg.model_type, "model_id": msg.job_id, "framework": FRAMEWORK,
            "framework_version": self.version(), "artifact": ctx.artifact_name,
            "ignored_hyperparameters": sorted(k for k in msg.hyperparameters if k not in used),
        }

    def _save(self, ctx: JobContext, model: torch.nn.Module, prep: Prepared,
              cfg: dict[str, Any], result: dict[str, Any]) -> None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        store, job_id = ctx.artifacts, ctx.message.job_id
        store.write(job_id, MODEL_FILE, lambda fh: torch.save(state, fh))
        if prep.vocab is not None:
            prep.vocab.save(store.local_path(job_id, VOCAB_FILE))
            store.push(job_id, VOCAB_FILE)
        keys = ("framework", "framework_version", "model_type", "model_id", "metrics",
                "history", "epochs_run", "resumed_from_epoch")
        store.publish(job_id, {
            **{k: result[k] for k in keys}, **prep.meta, "config": cfg,
            "n_classes": prep.n_classes, "size": prep.size, "data_path": ctx.message.data_path,
            "hyperparameters": ctx.message.hyperparameters,
            "files": [MODEL_FILE, *([VOCAB_FILE] if prep.vocab is not None else [])],
        })

    def infer(self, ctx: JobContext, progress: Progress) -> dict[str, Any]:
        msg = ctx.message
        if not msg.model_id:
            raise FailJob("model_id is required for inference", code="model_id_required")
        device = device_for(msg.parameters, ctx)
        limit_threads(msg.parameters, device)
        try:
            result = torch_infer.infer(ctx, progress, device)
        finally:
            release(device)
        return {**result, "model_id": msg.model_id, "framework": FRAMEWORK,
                "framework_version": self.version()}
