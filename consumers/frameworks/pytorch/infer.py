"""Inference with a saved PyTorch model: rebuild the architecture from ``metadata.json``, load
``model.pt`` (a plain state_dict, loaded with ``weights_only``) and predict on inline inputs or a
data file. Classifiers return labels and probabilities; ``gpt`` generates text from prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from consumers.frameworks.base import FailJob, JobContext, Progress
from consumers.frameworks.params import Params, bad
from consumers.frameworks.pytorch.data import inline_images, load_images
from consumers.frameworks.pytorch.models import build_model
from consumers.textdata import (
    BOS_ID,
    EOS_ID,
    SPECIALS,
    Vocab,
    encode,
    inline_texts,
    load_text,
)

MODEL_FILE = "model.pt"
VOCAB_FILE = "vocab.json"
FRAMEWORK = "pytorch"


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """N x C x H x W float images to ``size`` x ``size`` (bilinear), unchanged when they fit."""
    if tuple(x.shape[2:]) == (size, size):
        return x
    resized: torch.Tensor = F.interpolate(x, size=(size, size), mode="bilinear",
                                          align_corners=False)
    return resized


def load_saved(ctx: JobContext, model_id: str,
               device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    directory, meta = ctx.artifacts.model(model_id)  # a local copy (the worker's cache)
    if meta.get("framework") != FRAMEWORK:
        raise FailJob(f"model {model_id!r} was trained with framework "
                         f"{meta.get('framework')!r}, not {FRAMEWORK!r}", code="framework_mismatch")
    try:
        model = build_model(meta["model_type"], meta["config"], int(meta["n_classes"]),
                            int(meta["size"]))
        state = torch.load(directory / MODEL_FILE, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise FailJob(f"model {model_id!r} could not be loaded: {exc}"[:800],
                         code="model_unreadable") from exc
    return model.to(device).eval(), meta, directory


def _source(ctx: JobContext) -> list[list[Any]] | str:
    msg = ctx.message
    if msg.inputs is not None:
        return msg.inputs
    if msg.data_path:
        return msg.data_path
    raise FailJob("inference needs inputs (rows) or a data_path", code="inputs_required")


def _probabilities(model: torch.nn.Module, family: str, tensors: tuple[torch.Tensor, ...],
                   batch_size: int, device: torch.device, progress: Progress) -> torch.Tensor:
    out = []
    steps = (len(tensors[0]) + batch_size - 1) // batch_size
    for step in range(steps):
        batch = [t[step * batch_size: (step + 1) * batch_size].to(device) for t in tensors]
        with torch.inference_mode():
            logits = model(batch[0]) if family == "image" else \
                model(input_ids=batch[0], attention_mask=batch[1]).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu())
        progress("predicting", step=step + 1, steps=steps, percent=20 + 80 * (step + 1) / steps)
    return torch.cat(out)


def _image_tensors(ctx: JobContext, meta: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    shape = tuple(int(v) for v in meta["input_shape"])
    source = _source(ctx)
    if isinstance(source, str):
        x = load_images(ctx.data_root, source, labelled=False).x
        if tuple(x.shape[1:]) != shape:
            raise FailJob(f"{source}: images of shape {list(x.shape[1:])} but the model was "
                             f"trained on {list(shape)}", code="invalid_inputs")
    else:
        x = inline_images(source, shape)  # type: ignore[arg-type]
    images = resize(torch.from_numpy(x), int(meta["image_size"]))
    mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
    return ((images - mean[None, :, None, None]) / std[None, :, None, None],)


def _texts(ctx: JobContext, meta: dict[str, Any]) -> list[str]:
    source = _source(ctx)
    if isinstance(source, str):
        return load_text(ctx.data_root, source, text_column=meta.get("text_column"),
                         labelled=False).texts
    return inline_texts(source)


def _classify(ctx: JobContext, model: torch.nn.Module, meta: dict[str, Any], vocab: Vocab | None,
              device: torch.device, progress: Progress) -> dict[str, Any]:
    family = meta["config"]["family"]
    if family == "image":
        tensors = _image_tensors(ctx, meta)
    else:
        assert vocab is not None
        ids, mask = encode(vocab, _texts(ctx, meta), int(meta["max_length"]))
        tensors = (torch.from_numpy(ids), torch.from_numpy(mask))
    batch_size = Params(ctx.message.parameters).integer("batch_size", 64, 1, 65_536)
    probs = _probabilities(model, family, tensors, batch_size, device, progress)
    classes = meta["classes"]
    out: dict[str, Any] = {"predictions": [classes[i] for i in probs.argmax(-1).tolist()],
                           "classes": classes, "n": len(probs),
                           "probabilities": probs.round(decimals=6).tolist()}
    names = meta.get("class_names")
    if names and classes == list(range(len(names))):
        out["predicted_names"] = [names[int(p)] for p in out["predictions"]]
    return out


def _generation_options(parameters: dict[str, Any], limit: int) -> dict[str, Any]:
    greedy = parameters.get("greedy", True)
    if not isinstance(greedy, bool):
        raise bad("greedy", "true or false", greedy)
    p = Params(parameters)
    return {"max_new_tokens": p.integer("max_new_tokens", 20, 1, limit - 1),
            "greedy": greedy, "temperature": p.number("temperature", 1.0, gt=0.0, le=100.0),
            "top_k": p.integer("top_k", 0, 0, 1_000_000),
            "seed": p.integer("seed", 0, 0, 2**31 - 1)}


def generate(model: torch.nn.Module, prompt: list[int], limit: int, options: dict[str, Any],
             device: torch.device, generator: torch.Generator) -> list[int]:
    """Greedy or sampled continuation (temperature, top-k) until ``[EOS]`` or the length cap."""
    with torch.inference_mode():
        return _generate(model, prompt, limit, options, device, generator)


def _generate(model: torch.nn.Module, prompt: list[int], limit: int, options: dict[str, Any],
              device: torch.device, generator: torch.Generator) -> list[int]:
    x = torch.tensor([[BOS_ID, *prompt]], device=device)[:, -(limit - 1):]
    new: list[int] = []
    for _ in range(options["max_new_tokens"]):
        logits = model(input_ids=x[:, -limit:]).logits[0, -1].float().cpu()
        logits[[i for i in range(len(SPECIALS)) if i != EOS_ID]] = -torch.inf
        if options["greedy"]:
            token = int(logits.argmax())
        else:
            logits = logits / options["temperature"]
            if options["top_k"]:
                kth = torch.topk(logits, min(options["top_k"], len(logits))).values[-1]
                logits[logits < kth] = -torch.inf
            token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if token == EOS_ID:
            break
        new.append(token)
        x = torch.cat([x, torch.tensor([[token]], device=device)], dim=1)
    return new


def _generate_all(ctx: JobContext, model: torch.nn.Module, meta: dict[str, Any], vocab: Vocab,
                  device: torch.device, progress: Progress) -> dict[str, Any]:
    limit = int(meta["max_length"])
    options = _generation_options(ctx.message.parameters, limit)
    generator = torch.Generator().manual_seed(options["seed"])
    prompts = _texts(ctx, meta)
    generated = []
    for i, prompt in enumerate(prompts):
        tokens = generate(model, vocab.ids(prompt), limit, options, device, generator)
        generated.append(vocab.decode(tokens))
        progress("generating", step=i + 1, steps=len(prompts),
                 percent=20 + 80 * (i + 1) / len(prompts))
    full = [f"{vocab.decode(vocab.ids(p))} {g}".strip() for p, g in zip(prompts, generated,
                                                                          strict=True)]
    return {"predictions": full, "generated": generated, "n": len(prompts),
            "options": options}


def infer(ctx: JobContext, progress: Progress, device: torch.device) -> dict[str, Any]:
    """Predict with the model ``ctx.message.model_id`` (already validated as present)."""
    model_id = ctx.message.model_id or ""
    progress("loading_model", percent=0, message=model_id)
    model, meta, directory = load_saved(ctx, model_id, device)
    vocab = Vocab.load(directory / VOCAB_FILE) if meta["config"]["family"] != "image" else None
    progress("loading_data", percent=10)
    if meta["config"]["family"] == "lm":
        assert vocab is not None
        return _generate_all(ctx, model, meta, vocab, device, progress)
    return _classify(ctx, model, meta, vocab, device, progress)
