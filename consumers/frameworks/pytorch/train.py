"""The PyTorch training loop: shuffled mini-batches, per-step progress, evaluation on the
held-out split and an atomic checkpoint after every epoch, from which a reclaimed job resumes.

``progress`` raises ``CancelRequested``/``StopRequested`` at step boundaries; those propagate
untouched (a cancelled job's checkpoint is removed first: nobody will resume it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from consumers.artifact_store import StoredFile
from consumers.frameworks.base import CancelRequested, Progress, check_of

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
Tensors = tuple[torch.Tensor, ...]


@dataclass(slots=True)
class Trainer:
    """One training run. ``train``/``test`` tensors stay on the CPU; batches move to ``device``.

    Image batches are ``(x, y)``, text ``(ids, mask, y)``, language-model ``(ids, mask)``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    family: str  # "image" | "text" | "lm"
    device: torch.device
    train: Tensors
    test: Tensors
    epochs: int
    batch_size: int
    checkpoint: StoredFile  # in the artifact store, under the job's id
    fingerprint: str
    generator: torch.Generator = field(default_factory=torch.Generator)
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return math.ceil(len(self.train[0]) / self.batch_size)


@dataclass(frozen=True, slots=True)
class FitResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]
    epochs_run: int
    resumed_from_epoch: int | None


def outputs(family: str, model: nn.Module, batch: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean loss, logits)`` of one batch already on the model's device."""
    if family == "image":
        logits = model(batch[0])
        return F.cross_entropy(logits, batch[1]), logits
    if family == "text":
        out = model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2])
        return out.loss, out.logits
    ids, mask = batch
    out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    return out.loss, out.logits


def _to(batch: Tensors, device: torch.device) -> Tensors:
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _train_epoch(t: Trainer, epoch: int, progress: Progress) -> float:
    t.model.train()
    order = torch.randperm(len(t.train[0]), generator=t.generator)
    total = 0.0
    for step in range(1, t.steps + 1):
        index = order[(step - 1) * t.batch_size: step * t.batch_size]
        loss, _ = outputs(t.family, t.model, _to(tuple(x[index] for x in t.train), t.device))
        t.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        t.optimizer.step()
        total += float(loss.item())
        done = (epoch - 1) * t.steps + step
        progress("training", percent=5 + 90 * done / (t.epochs * t.steps), epoch=epoch,
                 epochs=t.epochs, step=step, steps=t.steps, loss=round(total / step, 6))
    return total / t.steps


def evaluate(t: Trainer, check: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Held-out metrics: accuracy and loss for classifiers, loss and perplexity for ``lm``."""
    with torch.inference_mode():
        return _evaluate(t, check)


def _evaluate(t: Trainer, check: Callable[[], None]) -> dict[str, float]:
    t.model.eval()
    loss_sum = weight_sum = correct = 0.0
    for start in range(0, len(t.test[0]), t.batch_size):
        check()  # a cancel or timeout stops evaluation too, batch by batch
        batch = _to(tuple(x[start: start + t.batch_size] for x in t.test), t.device)
        loss, logits = outputs(t.family, t.model, batch)
        if t.family == "lm":  # token-weighted: the loss is a mean over predicted tokens
            weight = float(batch[1][:, 1:].sum())
        else:
            weight = float(len(batch[0]))
            correct += float((logits.argmax(-1) == batch[-1]).sum())
        loss_sum += float(loss) * weight
        weight_sum += weight
    val_loss = loss_sum / max(weight_sum, 1.0)
    if t.family == "lm":
        return {"val_loss": val_loss, "perplexity": math.exp(min(val_loss, 50.0))}
    return {"accuracy": correct / len(t.test[0]), "val_loss": val_loss}


def save_checkpoint(t: Trainer, epoch: int) -> None:
    rng = {"torch": torch.get_rng_state(), "shuffle": t.generator.get_state()}
    if t.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(t.device)
    state = {"format": CHECKPOINT_FORMAT, "fingerprint": t.fingerprint, "epoch": epoch,
             "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
             "history": t.history, "rng": rng}
    t.checkpoint.save(lambda fh: torch.save(state, fh))


def _restore(t: Trainer, state: dict[str, Any]) -> int:
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.history = list(state["history"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    t.generator.set_state(state["rng"]["shuffle"].cpu())
    if "cuda" in state["rng"] and t.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), t.device)
    return int(state["epoch"])


def load_checkpoint(t: Trainer, progress: Progress) -> int | None:
    """The epoch the checkpoint was written after, restoring model, optimizer and RNGs; ``None``
    when there is no usable checkpoint (missing, unreadable, or from another configuration)."""
    path = t.checkpoint.fetch()  # from the store: the worker that wrote it may have died
    if path is None:
        return None
    try:
        state = torch.load(path, map_location=t.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != t.fingerprint:
            raise ValueError("it was written for another model, data or configuration")
        return _restore(t, state)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        progress("training", message=f"ignoring checkpoint ({exc}); training from scratch")
        return None


def discard_checkpoint(t: Trainer) -> None:
    t.checkpoint.delete()


def _epoch_metrics(t: Trainer, train_loss: float, progress: Progress) -> dict[str, float]:
    return {**{k: round(v, 6) for k, v in evaluate(t, check_of(progress)).items()},
            "train_loss": round(train_loss, 6)}


def fit(t: Trainer, progress: Progress) -> FitResult:
    """Train from the checkpoint (if any) to ``t.epochs``; checkpoint after each epoch."""
    resumed = load_checkpoint(t, progress)
    start = resumed or 0
    if resumed is not None:
        progress("resumed", message=f"resumed from checkpoint after epoch {resumed}",
                 epoch=resumed, epochs=t.epochs, percent=5 + 90 * resumed / t.epochs)
    try:
        for epoch in range(start + 1, t.epochs + 1):
            metrics = _epoch_metrics(t, _train_epoch(t, epoch, progress), progress)
            t.history.append({"epoch": epoch, **metrics})
            save_checkpoint(t, epoch)
            progress("evaluating", percent=5 + 90 * epoch / t.epochs, epoch=epoch,
                     epochs=t.epochs, loss=metrics["train_loss"], metrics=metrics,
                     message=f"epoch {epoch} done, checkpoint saved")
    except CancelRequested:
        discard_checkpoint(t)
        raise
    metrics = {k: v for k, v in t.history[-1].items() if k != "epoch"} if t.history else {}
    return FitResult(metrics=metrics, history=t.history, epochs_run=t.epochs - start,
                     resumed_from_epoch=resumed)
