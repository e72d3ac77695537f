"""PyTorch model architectures, built from small configs (never downloaded from a hub).

Families: ``image`` (resnet, vgg, alexnet: classifiers sized to the input images), ``text``
(bert, transformer: sequence classifiers over a word-level vocabulary) and ``lm`` (gpt: a
causal language model). ``resolve_config`` validates a job's hyperparameters into a plain
JSON-able config; ``build_model`` turns a config (saved in the model's metadata) back into the
same architecture, so inference rebuilds exactly what training saved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from consumers.frameworks.base import FailJob
from consumers.frameworks.params import Params, bad

# ---- image classifiers -----------------------------------------------------------------------

def _resnet(cfg: dict[str, Any], n_classes: int, in_channels: int) -> nn.Module:
    """The CIFAR-style ResNet of He et al. (2016, section 4.2) for small images: a 3x3 stem
    without max-pooling, then three stages of torchvision's ``BasicBlock`` (widths w, 2w, 4w,
    ``blocks`` per stage, stride 2 between stages), global average pooling and a linear head.
    ``blocks=3, width=16`` is ResNet-20; torchvision's ImageNet ResNet-18 would reduce an 8x8
    digit to nothing in its stem."""
    from torchvision.models.resnet import BasicBlock  # type: ignore[import-untyped, import-not-found, unused-ignore]

    w, blocks = cfg["width"], cfg["blocks"]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
                               nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
    planes_in = w
    for stage, planes in enumerate((w, 2 * w, 4 * w)):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            down = None
            if stride != 1 or planes_in != planes:
                down = nn.Sequential(nn.Conv2d(planes_in, planes, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes))
            layers.append(BasicBlock(planes_in, planes, stride, down))
            planes_in = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(planes_in, n_classes)]
    return nn.Sequential(*layers)


def _pool_or_keep(size: int) -> tuple[nn.Module, int]:
    """A 2x2 max-pool while the feature map is at least 2 pixels, else nothing."""
    return (nn.MaxPool2d(2), size // 2) if size >= 2 else (nn.Identity(), size)


def _vgg(cfg: dict[str, Any], n_classes: int, in_channels: int) -> nn.Module:
    """A scaled-down VGG (Simonyan & Zisserman; torchvision's ``vgg11_bn`` pattern): stages of
    3x3 conv + BatchNorm + ReLU (1, 1, 2 convs at widths w, 2w, 4w, instead of VGG-11's five
    stages from 64 to 512 channels), each followed by a 2x2 max-pool, then VGG's three-layer
    classifier with dropout (``hidden`` units instead of 4096). Same layer pattern, fewer and
    narrower layers, so it fits 8x8-32x32 inputs."""
    w, size = cfg["width"], cfg["image_size"]
    layers: list[nn.Module] = []
    channels = in_channels
    for convs, width in ((1, w), (1, 2 * w), (2, 4 * w)):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        pool, size = _pool_or_keep(size)
        layers.append(pool)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         *_dense_head(channels, cfg["hidden"], cfg["dropout"], n_classes))


def _dense_head(features: int, hidden: int, dropout: float, n_classes: int) -> list[nn.Module]:
    """VGG's and AlexNet's classifier: Dropout-Linear-ReLU twice, then the output layer."""
    return [nn.Dropout(dropout), nn.Linear(features, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, n_classes)]


def _alexnet(cfg: dict[str, Any], n_classes: int, in_channels: int) -> nn.Module:
    """A scaled-down AlexNet (Krizhevsky et al.; torchvision's ``alexnet`` layout): five conv
    layers with AlexNet's channel ratios (w, 3w, 6w, 4w, 4w instead of 64-192-384-256-256),
    max-pools after the first, second and fifth, ReLU and no normalisation, then the
    dropout/dense classifier with ``hidden`` units instead of 4096. The 11x11 stride-4 first
    convolution becomes 5x5 stride 1, as small inputs cannot afford it."""
    w, size = cfg["width"], cfg["image_size"]
    widths = (w, 3 * w, 6 * w, 4 * w, 4 * w)
    layers: list[nn.Module] = []
    channels = in_channels
    for i, width in enumerate(widths):
        kernel = 5 if i == 0 else 3
        layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
        channels = width
        if i in (0, 1, 4):
            pool, size = _pool_or_keep(size)
            layers.append(pool)
    return _he_init(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  *_dense_head(channels, cfg["hidden"], cfg["dropout"],
                                               n_classes)))


def _he_init(model: nn.Module) -> nn.Module:
    """He (Kaiming) initialisation of the convolutions, as torchvision's VGG does; without it
    (PyTorch's default) the unnormalised AlexNet stack needs several epochs to start learning."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _image_config(hp: dict[str, Any], model_type: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"width": Params(hp).integer("width", 16, 4, 256)}
    if model_type == "resnet":
        cfg["blocks"] = Params(hp).integer("blocks", 1, 1, 8)
    else:
        cfg["hidden"] = Params(hp).integer("hidden", 128, 8, 8192)
        cfg["dropout"] = Params(hp).number("dropout", 0.2, ge=0.0, le=0.9)
    return cfg


# ---- language models -------------------------------------------------------------------------

def _text_config(hp: dict[str, Any], model_type: str) -> dict[str, Any]:
    default_hidden = 64 if model_type in ("bert", "gpt") else 128
    cfg = {
        "hidden_size": Params(hp).integer("hidden_size", default_hidden, 8, 4096),
        "num_layers": Params(hp).integer("num_layers", 2, 1, 48),
        "num_heads": Params(hp).integer("num_heads", 4 if model_type == "transformer" else 2,
                                        1, 64),
        "max_length": Params(hp).integer("max_length", 32, 4, 2048),
        "dropout": Params(hp).number("dropout", 0.1, ge=0.0, le=0.9),
    }
    if cfg["hidden_size"] % cfg["num_heads"]:
        raise bad("hidden_size", f"a multiple of num_heads ({cfg['num_heads']})",
                  cfg["hidden_size"])
    return cfg


def _bert(cfg: dict[str, Any], n_classes: int, vocab_size: int) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    h = cfg["hidden_size"]
    model: nn.Module = BertForSequenceClassification(BertConfig(
        vocab_size=vocab_size, hidden_size=h, num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"], intermediate_size=4 * h,
        max_position_embeddings=cfg["max_length"], hidden_dropout_prob=cfg["dropout"],
        attention_probs_dropout_prob=cfg["dropout"], num_labels=n_classes, pad_token_id=0))
    return model


def _distilbert(cfg: dict[str, Any], n_classes: int, vocab_size: int) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    h = cfg["hidden_size"]
    model: nn.Module = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=vocab_size, dim=h, n_layers=cfg["num_layers"], n_heads=cfg["num_heads"],
        hidden_dim=4 * h, max_position_embeddings=cfg["max_length"], dropout=cfg["dropout"],
        attention_dropout=cfg["dropout"], seq_classif_dropout=cfg["dropout"],
        num_labels=n_classes, pad_token_id=0))
    return model


def _gpt2(cfg: dict[str, Any], n_classes: int, vocab_size: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    from consumers.textdata import BOS_ID, EOS_ID, PAD_ID

    model: nn.Module = GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab_size, n_positions=cfg["max_length"], n_embd=cfg["hidden_size"],
        n_layer=cfg["num_layers"], n_head=cfg["num_heads"], resid_pdrop=cfg["dropout"],
        embd_pdrop=cfg["dropout"], attn_pdrop=cfg["dropout"], bos_token_id=BOS_ID,
        eos_token_id=EOS_ID, pad_token_id=PAD_ID))
    return model


# ---- the catalogue ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Architecture:
    family: str  # "image" | "text" | "lm"
    config: Callable[[dict[str, Any], str], dict[str, Any]]
    build: Callable[[dict[str, Any], int, int], nn.Module]  # (config, n_classes, in_size)
    params: frozenset[str]


_IMAGE = frozenset({"width", "image_size"})
_TEXT = frozenset({"hidden_size", "num_layers", "num_heads", "max_length", "dropout"})
ARCHITECTURES: dict[str, Architecture] = {
    "resnet": Architecture("image", _image_config, _resnet, _IMAGE | {"blocks"}),
    "vgg": Architecture("image", _image_config, _vgg, _IMAGE | {"hidden", "dropout"}),
    "alexnet": Architecture("image", _image_config, _alexnet, _IMAGE | {"hidden", "dropout"}),
    "bert": Architecture("text", _text_config, _bert, _TEXT),
    "transformer": Architecture("text", _text_config, _distilbert, _TEXT),
    "gpt": Architecture("lm", _text_config, _gpt2, _TEXT),
}


def architecture(model_type: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise FailJob(f"model type {model_type!r} is not served by the pytorch framework; "
                         f"known: {', '.join(sorted(ARCHITECTURES))}",
                         code="unsupported_model_type")
    return ARCHITECTURES[model_type]


def resolve_config(model_type: str, hp: dict[str, Any]) -> dict[str, Any]:
    """The validated architecture config of ``model_type`` (before any data is read)."""
    return architecture(model_type).config(hp, model_type)


def build_model(model_type: str, cfg: dict[str, Any], n_classes: int, size: int) -> nn.Module:
    """``size``: input channels for image models, vocabulary size for language models."""
    with torch.random.fork_rng(devices=[]):  # same initial weights, global RNG left alone
        torch.manual_seed(int(cfg.get("seed", 0)))
        return architecture(model_type).build(cfg, n_classes, size)
