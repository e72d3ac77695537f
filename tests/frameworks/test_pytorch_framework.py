"""The PyTorch framework called directly (no Redis): real training on small real data.

Vision models train on scikit-learn's bundled digits, language models on the shipped
``builtin:sentiment`` sentences. Runs only in a torch environment (``--extra pytorch_2_1``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sklearn")

import torch

from consumers import artifacts
from consumers.datasets import make_text
from consumers.frameworks.base import CancelRequested, FailJob, JobContext, StopRequested
from consumers.frameworks.pytorch import PytorchFramework, device_for
from consumers.frameworks.pytorch.train import CHECKPOINT_FILE
from consumers.textdata import TEXT_BUILTINS
from schemas.records import JobMessage

VISION = {"resnet": {"epochs": 3}, "vgg": {"epochs": 3}, "alexnet": {"epochs": 5}}
LANGUAGE = {"bert": {"epochs": 3}, "transformer": {"epochs": 3}, "gpt": {"epochs": 3}}
# The longest test (ResNet, 3 epochs) takes about 35 s on a quiet 2-core machine.
pytestmark = pytest.mark.timeout(300)


class Recorder:
    """A Progress that remembers every call and raises ``exc`` once ``when(stage, fields)``."""

    def __init__(self, when: Any = None, exc: type[BaseException] = StopRequested) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.when = when
        self.exc = exc

    def __call__(self, stage: str, **fields: Any) -> None:
        if self.when is not None and self.when(stage, fields):
            raise self.exc
        self.calls.append((stage, fields))

    def stage(self, name: str) -> list[dict[str, Any]]:
        return [fields for stage, fields in self.calls if stage == name]


def _ctx(root: Path, deliveries: int = 1, **fields: Any) -> JobContext:
    fields.setdefault("job_id", f"job_{uuid.uuid4()}")
    fields.setdefault("kind", "training")
    (root / "data").mkdir(exist_ok=True)
    return JobContext(message=JobMessage(**fields), data_root=root / "data",
                      artifact_root=root / "artifacts", deliveries=deliveries)


def _train(root: Path, model_type: str, data_path: str, progress: Recorder | None = None,
           **hp: Any) -> dict[str, Any]:
    ctx = _ctx(root, model_type=model_type, data_path=data_path, hyperparameters=hp)
    return PytorchFramework().train(ctx, progress or Recorder())


def _infer(root: Path, model_type: str, model_id: str, **fields: Any) -> dict[str, Any]:
    ctx = _ctx(root, kind="inference", model_type=model_type, model_id=model_id, **fields)
    return PytorchFramework().infer(ctx, Recorder())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pt")


@pytest.fixture(scope="module")
def trained(root: Path) -> dict[str, tuple[dict[str, Any], Recorder]]:
    """Every model type trained once: vision on digits, language models on sentiment."""
    out = {}
    for model_type, hp in {**VISION, **LANGUAGE}.items():
        data = "builtin:digits" if model_type in VISION else "builtin:sentiment"
        progress = Recorder()
        out[model_type] = (_train(root, model_type, data, progress, **hp), progress)
    return out


@pytest.fixture(scope="module")
def digits() -> Any:
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.mark.parametrize("model_type", list(VISION))
def test_vision_models_learn_digits(trained: dict[str, Any], root: Path,
                                    model_type: str) -> None:
    result, progress = trained[model_type]
    assert result["metrics"]["accuracy"] >= 0.8, result["history"]
    assert result["epochs_run"] == VISION[model_type]["epochs"]
    assert result["resumed_from_epoch"] is None
    steps = progress.stage("training")
    assert {s["epoch"] for s in steps if "epoch" in s} == set(range(1, result["epochs"] + 1))
    assert all(s["loss"] >= 0 for s in steps if "loss" in s)
    directory = root / "artifacts" / result["model_id"]
    assert not (directory / CHECKPOINT_FILE).exists()
    meta = artifacts.read_json(directory / artifacts.METADATA_FILE)
    assert (meta["framework"], meta["model_type"]) == ("pytorch", model_type)
    assert meta["framework_version"] == torch.__version__


@pytest.mark.parametrize("model_type", list(VISION))
def test_vision_inference_inline_rows_and_images(trained: dict[str, Any], root: Path,
                                                 digits: Any, model_type: str) -> None:
    model_id = trained[model_type][0]["model_id"]
    rows = digits.data[:40].tolist()  # flat rows of 64 values
    images = digits.images[:3].tolist()  # nested 8 x 8 lists
    flat = _infer(root, model_type, model_id, inputs=rows)
    nested = _infer(root, model_type, model_id, inputs=images)
    assert flat["n"] == len(flat["predictions"]) == 40
    assert nested["predictions"] == flat["predictions"][:3]
    assert np.mean(np.array(flat["predictions"]) == digits.target[:40]) >= 0.7
    assert len(flat["probabilities"][0]) == 10
    assert flat["framework"] == "pytorch"


@pytest.mark.parametrize("model_type", ["bert", "transformer"])
def test_text_classifiers_learn_sentiment(trained: dict[str, Any], root: Path,
                                          model_type: str) -> None:
    result, _ = trained[model_type]
    assert result["metrics"]["accuracy"] >= 0.75, result["history"]
    assert result["classes"] == ["negative", "positive"]
    texts = [["The movie was truly wonderful."], ["I hated the hotel."], ["A boring book."]]
    out = _infer(root, model_type, result["model_id"], inputs=texts)
    assert out["n"] == len(out["predictions"]) == 3
    assert set(out["predictions"]) <= {"negative", "positive"}
    assert (root / "artifacts" / result["model_id"] / "vocab.json").is_file()


def test_gpt_learns_and_generates(trained: dict[str, Any], root: Path) -> None:
    result, _ = trained["gpt"]
    history = result["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result["metrics"]["perplexity"] < 20
    prompts = [["The movie was"], ["I would not"]]
    out = _infer(root, "gpt", result["model_id"], inputs=prompts,
                 parameters={"max_new_tokens": 8})
    assert out["n"] == len(out["predictions"]) == len(out["generated"]) == 2
    assert all(g.strip() for g in out["generated"])
    assert out["predictions"][0].startswith("the movie was")
    sampled = _infer(root, "gpt", result["model_id"], inputs=prompts,
                     parameters={"max_new_tokens": 8, "greedy": False, "top_k": 5, "seed": 3})
    assert len(sampled["generated"]) == 2


def test_checkpoint_resume_after_a_crash(root: Path) -> None:
    """Killed after epoch 2 of 4; the redelivered job resumes there and ends where an
    uninterrupted run ends."""
    job = {"job_id": f"job_{uuid.uuid4()}", "model_type": "vgg", "data_path": "builtin:digits",
           "hyperparameters": {"epochs": 4}}
    crash = Recorder(when=lambda stage, f: stage == "training" and f.get("epoch") == 3)
    with pytest.raises(StopRequested):
        PytorchFramework().train(_ctx(root, **job), crash)
    checkpoint = root / "artifacts" / job["job_id"] / CHECKPOINT_FILE
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    progress = Recorder()
    result = PytorchFramework().train(_ctx(root, deliveries=2, **job), progress)
    assert (result["epochs_run"], result["resumed_from_epoch"]) == (2, 2)
    resumed = progress.stage("resumed")
    assert resumed and resumed[0]["epoch"] == 2 and "after epoch 2" in resumed[0]["message"]
    assert {s["epoch"] for s in progress.stage("training") if "epoch" in s} == {3, 4}
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert not checkpoint.exists()
    straight = _train(root, "vgg", "builtin:digits", epochs=4)
    assert straight["metrics"]["accuracy"] == pytest.approx(result["metrics"]["accuracy"])


def test_cancel_mid_epoch_propagates(root: Path) -> None:
    ctx = _ctx(root, model_type="vgg", data_path="builtin:digits", hyperparameters={"epochs": 2})
    cancel = Recorder(when=lambda stage, f: f.get("epoch") == 2 and f.get("step") == 3,
                      exc=CancelRequested)
    with pytest.raises(CancelRequested):
        PytorchFramework().train(ctx, cancel)
    assert cancel.stage("training")[-1]["epoch"] == 2
    assert not (ctx.artifact_dir / CHECKPOINT_FILE).exists()  # nobody resumes a cancelled job
    assert not (ctx.artifact_dir / artifacts.METADATA_FILE).exists()


def test_trains_on_npz_and_text_csv_files(root: Path, digits: Any) -> None:
    data = root / "data"
    x = np.repeat(digits.images[:300, :, :, None], 3, axis=3)  # channels-last RGB
    np.savez(data / "rgb.npz", x=x, y=digits.target[:300])
    result = _train(root, "resnet", "rgb.npz", epochs=1, image_size=12)
    assert result["config"]["image_size"] == 12
    out = _infer(root, "resnet", result["model_id"], inputs=[x[0].tolist()])
    assert out["n"] == 1
    rows = make_text.generate(300, seed=1)
    (data / "reviews.csv").write_text("id,review,mood\n" + "".join(
        f'{i},"{t}",{label}\n' for i, (t, label) in enumerate(rows)))
    result = _train(root, "bert", "reviews.csv", epochs=1, text_column="review",
                    label_column="mood", hidden_size=32, num_layers=1)
    out = _infer(root, "bert", result["model_id"], data_path="reviews.csv")
    assert out["n"] == 300


@pytest.mark.parametrize(("model_type", "data_path", "content", "code"), [
    ("bert", "notext.csv", "a,label\nx,1\ny,0\n", "invalid_data"),
    ("bert", "onelabel.csv", "text,label\ngood,1\nfine,1\n", "invalid_data"),
    ("gpt", "empty.csv", "", "invalid_data"),
    ("resnet", "noy.npz", None, "invalid_data"),
    ("resnet", "images.csv", "a,b\n1,2\n", "invalid_data"),
    ("resnet", "broken.npz", "not a zip", "invalid_data"),
    ("resnet", "builtin:sentiment", None, "unknown_dataset"),
    ("bert", "builtin:nope", None, "unknown_dataset"),
    ("vgg", "missing.npz", None, "data_not_found"),
    ("vgg", "../outside.npz", None, "data_path_outside_root"),
])
def test_bad_data_fails_without_retry(root: Path, model_type: str, data_path: str,
                                      content: str | None, code: str) -> None:
    path = root / "data" / data_path
    if content is not None:
        path.write_text(content)
    elif data_path == "noy.npz":
        np.savez(path, x=np.zeros((4, 8, 8)))
    with pytest.raises(FailJob) as err:
        _train(root, model_type, data_path, epochs=1)
    assert err.value.code == code, str(err.value)


@pytest.mark.parametrize(("model_type", "hp"), [
    ("bert", {"hidden_size": 30, "num_heads": 4}),
    ("gpt", {"epochs": 0}),
    ("resnet", {"learning_rate": -1}),
    ("vgg", {"batch_size": "big"}),
    ("alexnet", {"dropout": 1.5}),
    ("transformer", {"device": "tpu"}),
])
def test_bad_hyperparameters_fail_before_any_io(root: Path, model_type: str,
                                                hp: dict[str, Any]) -> None:
    with pytest.raises(FailJob) as err:
        _train(root, model_type, "does-not-exist.csv", **hp)
    assert err.value.code == "invalid_hyperparameters"


def test_inference_errors(trained: dict[str, Any], root: Path) -> None:
    vgg = trained["vgg"][0]["model_id"]
    with pytest.raises(FailJob) as err:
        _infer(root, "vgg", vgg, inputs=[[1.0, 2.0, 3.0]])
    assert err.value.code == "invalid_inputs"
    with pytest.raises(FailJob) as err:
        _infer(root, "vgg", f"job_{uuid.uuid4()}", inputs=[[0.0] * 64])
    assert err.value.code == "model_not_found"
    with pytest.raises(FailJob) as err:
        _infer(root, "bert", trained["bert"][0]["model_id"], inputs=[[3]])
    assert err.value.code == "invalid_inputs"


def test_weights_path_initialises_the_model(trained: dict[str, Any], root: Path) -> None:
    source = root / "artifacts" / trained["vgg"][0]["model_id"] / "model.pt"
    (root / "data" / "vgg_weights.pt").write_bytes(source.read_bytes())
    result = _train(root, "vgg", "builtin:digits", epochs=1, weights_path="vgg_weights.pt")
    assert result["weights"] == {"path": "vgg_weights.pt", "missing_keys": 0,
                                 "unexpected_keys": 0}
    assert result["metrics"]["accuracy"] >= 0.9  # starts from a trained model
    with pytest.raises(FailJob) as err:
        _train(root, "resnet", "builtin:digits", epochs=1, weights_path="vgg_weights.pt")
    assert err.value.code == "invalid_data"


@pytest.mark.parametrize("what", ["file", "dir"])
def test_a_symlink_swapped_in_after_the_check_is_refused(tmp_path: Path, what: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #10: resolve, swap (the file, or a directory on the way, for a symlink to outside
    the root), then open: the .npz images and the weights_path file are both refused."""
    from consumers import data
    from consumers.frameworks.pytorch import data as pt_data

    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    for d in (tmp_path / "data" / "sub", tmp_path / "outside"):
        np.savez(d / "x.npz", x=np.zeros((4, 8, 8)), y=np.arange(4) % 2)
        torch.save({}, d / "w.pt")
    real = data.resolve_data_path

    def resolve_then_swap(root: Path, data_path: str) -> Path:
        resolved = real(root, data_path)
        if what == "dir":
            (tmp_path / "data" / "sub").rename(tmp_path / "data" / "old")
            (tmp_path / "data" / "sub").symlink_to(tmp_path / "outside")
        else:
            (tmp_path / "data" / data_path).unlink()
            (tmp_path / "data" / data_path).symlink_to(tmp_path / "outside" / Path(data_path).name)
        return resolved

    monkeypatch.setattr(data, "resolve_data_path", resolve_then_swap)
    monkeypatch.setattr(pt_data, "resolve_data_path", resolve_then_swap)
    with pytest.raises(FailJob) as err:
        pt_data.load_images(tmp_path / "data", "sub/x.npz")
    assert err.value.code == "data_path_outside_root" and str(tmp_path) not in str(err.value)
    if what == "dir":  # put sub back for the second race
        (tmp_path / "data" / "sub").unlink()
        (tmp_path / "data" / "old").rename(tmp_path / "data" / "sub")
    with pytest.raises(FailJob) as err:
        _train(tmp_path, "vgg", "builtin:digits", epochs=1, weights_path="sub/w.pt")
    assert err.value.code == "data_path_outside_root" and str(tmp_path) not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_device_rule_on_a_cpu_worker(root: Path) -> None:
    ctx = _ctx(root, model_type="bert", data_path="x")
    assert device_for({}, ctx).type == "cpu"
    with pytest.raises(FailJob):
        device_for({"device": "cuda"}, ctx)


def test_shipped_sentiment_dataset_is_reproducible() -> None:
    path = TEXT_BUILTINS["sentiment"]
    assert path.read_text(encoding="utf-8") == make_text.render(make_text.generate())
    assert path.stat().st_size < 200_000


@pytest.mark.parametrize(("model_type", "hp", "most"), [
    # 6 x 32 x 4 x (12 x 256^2 + 32 x 256) per sample: 6.1e8 of the 6e10 a CPU step may cost
    ("bert", {"batch_size": 4096, "max_length": 32, "hidden_size": 256, "num_layers": 4}, 98),
    ("resnet", {"batch_size": 4096, "image_size": 64, "width": 64}, 32),  # 64^2 x 64^2 each
])
def test_a_cpu_step_is_bounded(root: Path, model_type: str, hp: dict[str, Any], most: int
                               ) -> None:
    """A step is where cancel and timeout are seen: on a CPU it must stay small."""
    data = "builtin:sentiment" if model_type == "bert" else "builtin:digits"
    with pytest.raises(FailJob) as err:
        _train(root, model_type, data, epochs=1, **hp)
    assert err.value.code == "invalid_hyperparameters"
    assert f"at most {most} on a CPU" in str(err.value)
