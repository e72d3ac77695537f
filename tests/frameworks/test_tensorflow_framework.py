"""The tensorflow framework called directly (no Redis): real Keras training on small real data.

TensorFlow's first training step traces the whole model (~15-30 s on a 2-core CPU), so every
``train`` here is one short run; the suite skips where TensorFlow is not installed.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from consumers import artifacts
from consumers.artifact_store import ArtifactStore
from consumers.frameworks.base import CancelRequested, FailJob, JobContext, StopRequested
from consumers.frameworks.tensorflow import (
    CHECKPOINT_DIR,
    MODEL_FILE,
    TensorflowFramework,
    load_images,
    parse_spec,
)
from consumers.frameworks.tensorflow import models as tf_models
from schemas.records import JobMessage
from tests.s3_server import S3Server

pytestmark = pytest.mark.timeout(240)


class Recorder:
    """A Progress that remembers every call and can raise at a chosen (epoch, step)."""

    def __init__(self, raise_at: tuple[int, int] | None = None,
                 error: type[Exception] = StopRequested) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.raise_at = raise_at
        self.error = error

    def __call__(self, stage: str, **kwargs: Any) -> None:
        self.calls.append((stage, kwargs))
        at = (kwargs.get("epoch"), kwargs.get("step"))
        if stage == "training" and at == self.raise_at:
            raise self.error

    def stage(self, name: str) -> list[dict[str, Any]]:
        return [kw for stage, kw in self.calls if stage == name]


def _ctx(root: Path, deliveries: int = 1, store: ArtifactStore | None = None,
         **fields: Any) -> JobContext:
    fields.setdefault("job_id", f"job_{uuid.uuid4()}")
    fields.setdefault("kind", "training")
    fields.setdefault("model_type", "mobilenet")
    (root / "data").mkdir(exist_ok=True)
    return JobContext(message=JobMessage(**fields), data_root=root / "data",
                      artifact_root=root / "artifacts" if store is None else store.local,
                      deliveries=deliveries, store=store)


def _infer(root: Path, model_id: str, store: ArtifactStore | None = None,
           **fields: Any) -> dict[str, Any]:
    ctx = _ctx(root, kind="inference", model_id=model_id, store=store, **fields)
    return TensorflowFramework().infer(ctx, Recorder())


def _rgb_blobs(path: Path, n: int = 240, side: int = 16) -> Path:
    """Three classes of uint8 RGB images: a bright square in one colour channel each."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(n, side, side, 3), dtype=np.uint8)
    y = np.arange(n) % 3
    for i, label in enumerate(y):
        x[i, 4:12, 4:12, label] = 230
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tf")
    (path / "data").mkdir()
    return path


@pytest.fixture(scope="module")
def mobilenet(root: Path) -> tuple[dict[str, Any], Recorder]:
    """MobileNetV2 trained on builtin:digits (8x8 grayscale, upsampled to 32x32) for 3 epochs."""
    ctx = _ctx(root, data_path="builtin:digits", hyperparameters={"epochs": 3, "batch_size": 32})
    progress = Recorder()
    return TensorflowFramework().train(ctx, progress), progress


def test_tensorflow_imports_with_typing_extensions_override() -> None:
    import importlib.metadata

    import tensorflow as tf

    assert tf.__version__.startswith("2.13.")
    major, minor = (int(p) for p in importlib.metadata.version("typing-extensions").split(".")[:2])
    assert (major, minor) >= (4, 12)
    assert TensorflowFramework().version() == tf.__version__


def test_mobilenet_learns_digits(root: Path, mobilenet: tuple[dict[str, Any], Recorder]) -> None:
    result, progress = mobilenet
    print("mobilenet digits metrics:", result["metrics"])
    assert result["metrics"]["accuracy"] > 0.2  # 10 classes: chance is 0.1
    assert math.isfinite(result["metrics"]["loss"])
    assert result["epochs_run"] == 3 and result["resumed_from_epoch"] is None
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert result["input_shape"] == [8, 8, 1] and result["model_input_size"] == [32, 32]
    assert result["classes"] == list(range(10))
    model_dir = root / "artifacts" / result["model_id"]
    assert (model_dir / MODEL_FILE).is_file()
    assert not (model_dir / CHECKPOINT_DIR).exists()  # removed once the model is saved
    meta = artifacts.read_json(model_dir / artifacts.METADATA_FILE)
    assert meta["framework"] == "tensorflow" and meta["model_type"] == "mobilenet"
    assert meta["framework_version"] == result["framework_version"]
    assert meta["input_shape"] == [8, 8, 1] and meta["metrics"] == result["metrics"]
    steps = math.ceil(result["n_train"] / 32)
    batches = [kw for kw in progress.stage("training") if kw.get("step") is not None]
    assert len(batches) == 3 * steps  # progress (and cancel checks) at every batch
    assert batches[-1]["epoch"] == 3 and batches[-1]["steps"] == steps
    assert all(math.isfinite(kw["loss"]) for kw in batches)


def test_inference_by_model_id(root: Path, mobilenet: tuple[dict[str, Any], Recorder]) -> None:
    model_id = mobilenet[0]["model_id"]
    out = _infer(root, model_id, data_path="builtin:digits")
    assert out["n"] == len(out["predictions"]) == 1797
    assert out["framework"] == "tensorflow" and out["model_id"] == model_id
    assert len(out["probabilities"][0]) == 10
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert np.mean(np.asarray(out["predictions"]) == digits.target) > 0.2
    rows = digits.data[:3].tolist()  # 64 floats each
    flat = _infer(root, model_id, inputs=rows)
    nested = _infer(root, model_id, inputs=[img.tolist() for img in digits.images[:3]])
    assert flat["predictions"] == nested["predictions"] == out["predictions"][:3]
    assert flat["n"] == 3


def test_inference_errors(root: Path, mobilenet: tuple[dict[str, Any], Recorder]) -> None:
    model_id = mobilenet[0]["model_id"]
    with pytest.raises(FailJob) as bad_shape:
        _infer(root, model_id, inputs=[[1.0, 2.0, 3.0]])
    assert bad_shape.value.code == "invalid_inputs" and "[8, 8, 1]" in str(bad_shape.value)
    with pytest.raises(FailJob) as ragged:
        _infer(root, model_id, inputs=[[1.0] * 64, [1.0] * 63])
    assert ragged.value.code == "invalid_inputs"
    with pytest.raises(FailJob) as missing:
        _infer(root, "job_does-not-exist", inputs=[[0.0] * 64])
    assert missing.value.code == "model_not_found"


@pytest.mark.parametrize(("model_type", "size"), [("inception", 75), ("efficientnet", 32)])
def test_other_models_train_save_and_load(root: Path, model_type: str, size: int) -> None:
    hp = {"epochs": 1, "batch_size": 32, "max_samples": 80}
    ctx = _ctx(root, model_type=model_type, data_path="builtin:digits", hyperparameters=hp)
    result = TensorflowFramework().train(ctx, Recorder())
    print(model_type, "metrics:", result["metrics"])
    assert math.isfinite(result["metrics"]["loss"]) and math.isfinite(
        result["metrics"]["train_loss"])
    assert result["metrics"]["accuracy"] >= 0
    assert result["model_input_size"] == [size, size] and result["n_train"] == 64
    out = _infer(root, result["model_id"], inputs=np.zeros((4, 64)).tolist())
    assert len(out["predictions"]) == 4 and all(p in range(10) for p in out["predictions"])


def test_interrupted_job_resumes_from_checkpoint(root: Path) -> None:
    """Interrupted in epoch 3 of 4 (worker died / drained); the redelivered job resumes after
    epoch 2 instead of starting over. Data: an .npz of uint8 RGB images."""
    _rgb_blobs(root / "data" / "blobs.npz", n=150)
    job_id = f"job_{uuid.uuid4()}"
    fields = {"job_id": job_id, "data_path": "blobs.npz",
              "hyperparameters": {"epochs": 4, "batch_size": 32}}
    first = Recorder(raise_at=(3, 2), error=StopRequested)
    with pytest.raises(StopRequested):
        TensorflowFramework().train(_ctx(root, **fields), first)
    checkpoint = root / "artifacts" / job_id / CHECKPOINT_DIR
    assert artifacts.read_json(checkpoint / "latest.json")["epoch"] == 2
    assert not (root / "artifacts" / job_id / MODEL_FILE).exists()

    again = Recorder()
    result = TensorflowFramework().train(_ctx(root, deliveries=2, **fields), again)
    assert result["resumed_from_epoch"] == 2 and result["epochs_run"] == 2
    resumed = again.stage("resumed")
    assert resumed == [{"percent": 50.0, "epoch": 2, "epochs": 4,
                        "message": "resumed from checkpoint after epoch 2"}]
    epochs = {kw["epoch"] for kw in again.stage("training") if kw.get("step")}
    assert epochs == {3, 4}
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert result["input_shape"] == [16, 16, 3] and result["classes"] == [0, 1, 2]
    assert not checkpoint.exists() and (root / "artifacts" / job_id / MODEL_FILE).is_file()


def test_checkpoints_and_the_model_go_through_an_s3_store(
        root: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """ARTIFACT_URI=s3://...: a job interrupted on worker A resumes on worker B from the
    checkpoint directory in S3, and worker C serves the model; each has its own empty local
    directory (the data root is the only thing they share here)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    uri = s3_server.uri(f"tf-{uuid.uuid4().hex[:8]}")
    a, b, c = (ArtifactStore(root / f"s3-{n}", uri, s3_server.endpoint_url) for n in "abc")
    _rgb_blobs(root / "data" / "blobs-s3.npz", n=150)
    fields = {"job_id": f"job_{uuid.uuid4()}", "data_path": "blobs-s3.npz",
              "hyperparameters": {"epochs": 3, "batch_size": 32}}
    with pytest.raises(StopRequested):
        TensorflowFramework().train(_ctx(root, store=a, **fields),
                                    Recorder(raise_at=(2, 2), error=StopRequested))
    job = fields["job_id"]
    assert b.read_json(job, f"{CHECKPOINT_DIR}/latest.json")["epoch"] == 1
    result = TensorflowFramework().train(_ctx(root, deliveries=2, store=b, **fields), Recorder())
    assert result["resumed_from_epoch"] == 1 and result["epochs_run"] == 2
    keys = s3_server.filesystem().find(f"{uri.removeprefix('s3://')}/{job}")
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["metadata.json", MODEL_FILE]
    out = _infer(root, job, store=c, inputs=np.zeros((2, 16, 16, 3)).tolist())
    assert len(out["predictions"]) == 2 and (c.local / job / MODEL_FILE).is_file()


def test_cancel_mid_epoch_propagates_out_of_keras_fit() -> None:
    """CancelRequested raised by progress inside ``fit`` is not swallowed by Keras: it stops
    training at that very batch and reaches the caller. (A tiny model keeps this fast; the
    resume test above shows the same path through ``train`` with StopRequested.)"""
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(3)])
    tf_models.compile_model(model, tf_models.optimizer("adam", 1e-3))
    x, y = np.random.default_rng(0).random((320, 4)), np.arange(320) % 3
    progress, epochs_done = Recorder(raise_at=(1, 3), error=CancelRequested), []
    callback = tf_models.JobCallback(progress, 2, 10, lambda e, logs: epochs_done.append(e))
    with pytest.raises(CancelRequested):
        tf_models.fit(model, (x, y, x[:32], y[:32]), batch_size=32, epochs=2, initial_epoch=0,
                      callback=callback)
    batches = [kw for kw in progress.stage("training") if kw.get("step")]
    assert [kw["step"] for kw in batches] == [1, 2, 3] and epochs_done == []
    assert int(model.optimizer.iterations) == 3


def test_weights_path_seeds_the_model(root: Path,
                                      mobilenet: tuple[dict[str, Any], Recorder]) -> None:
    trained = tf_models.load_model(root / "artifacts" / mobilenet[0]["model_id"] / MODEL_FILE)
    trained.save_weights(str(root / "data" / "digits.weights.h5"))
    fresh = tf_models.build_model("mobilenet", (8, 8, 1), 10, target=(32, 32), pixel_scale=16.0,
                                  alpha=0.35, bn_momentum=0.9)
    tf_models.load_weights(fresh, root / "data" / "digits.weights.h5")
    for a, b in zip(trained.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    (root / "data" / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FailJob) as junk:
        tf_models.load_weights(fresh, root / "data" / "junk.h5")
    assert junk.value.code == "invalid_weights"


def _fail(root: Path, data_path: str | None, code: str, model_type: str = "mobilenet",
          **hp: Any) -> str:
    ctx = _ctx(root, model_type=model_type, data_path=data_path, hyperparameters=hp)
    with pytest.raises(FailJob) as info:
        TensorflowFramework().train(ctx, Recorder())
    assert info.value.code == code, str(info.value)
    return str(info.value)


def test_weights_are_loaded_from_what_was_opened_safely(root: Path) -> None:
    """Keras gets a private copy of the weights file opened by open_data (a file swapped for
    a symlink after the check cannot escape the root); errors name the user's path only."""
    (root / "data" / "junk.h5").write_bytes(b"not hdf5")
    message = _fail(root, "builtin:digits", "invalid_weights", weights_path="junk.h5")
    assert "'junk.h5'" in message and "aiq-weights-" not in message
    outside = root / "secret.h5"
    outside.write_bytes(b"secret")
    (root / "data" / "link.h5").symlink_to(outside)
    _fail(root, "builtin:digits", "data_path_outside_root", weights_path="link.h5")


def test_a_step_is_bounded(root: Path) -> None:
    """A step is where cancel and timeout are seen: at inception's 75x75 input, 93 images."""
    message = _fail(root, "builtin:digits", "invalid_hyperparameters", model_type="inception",
                    batch_size=256)
    assert "at most 93 at 75x75" in message


def test_bad_data_fails_with_invalid_data(root: Path) -> None:
    data = root / "data"
    np.savez(data / "no_labels.npz", x=np.zeros((10, 8, 8)))
    assert "'y'" in _fail(root, "no_labels.npz", "invalid_data")
    np.savez(data / "flat.npz", x=np.zeros((10, 64)), y=np.arange(10) % 2)
    assert "NxHxW" in _fail(root, "flat.npz", "invalid_data")
    np.savez(data / "short_y.npz", x=np.zeros((10, 8, 8)), y=np.arange(9) % 2)
    assert "10 values" in _fail(root, "short_y.npz", "invalid_data")
    np.savez(data / "one_class.npz", x=np.zeros((10, 8, 8)), y=np.zeros(10))
    assert "at least 2 classes" in _fail(root, "one_class.npz", "invalid_data")
    nan = np.zeros((10, 8, 8))
    nan[3, 2, 1] = np.nan
    np.savez(data / "nan.npz", x=nan, y=np.arange(10) % 2)
    assert "NaN" in _fail(root, "nan.npz", "invalid_data")
    (data / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    assert "not a readable .npz" in _fail(root, "broken.npz", "invalid_data")
    (data / "images.txt").write_text("1 2 3\n")
    assert "unsupported file type" in _fail(root, "images.txt", "invalid_data")
    assert "not an image dataset" in _fail(root, "builtin:iris", "invalid_data")
    _fail(root, "builtin:nope", "unknown_dataset")
    _fail(root, "missing.npz", "data_not_found")
    _fail(root, "../outside.npz", "data_path_outside_root")
    _fail(root, None, "data_path_required")


def test_csv_of_flattened_pixels(root: Path) -> None:
    header = ",".join(f"p{i}" for i in range(16)) + ",label\n"
    rows = "".join(",".join(str((r + i) % 7) for i in range(16)) + f",{r % 2}\n"
                   for r in range(6))
    (root / "data" / "pixels.csv").write_text(header + rows)
    images = load_images(root / "data", "pixels.csv", parse_spec("mobilenet", {}))
    assert images.shape == (4, 4, 1) and images.classes == [0, 1] and len(images.y) == 6
    wide = parse_spec("mobilenet", {"image_shape": [2, 8]})
    assert load_images(root / "data", "pixels.csv", wide).shape == (2, 8, 1)
    (root / "data" / "odd.csv").write_text("a,b,c,d,e,label\n1,2,3,4,5,0\n3,2,1,0,0,1\n")
    assert "image_shape" in _fail(root, "odd.csv", "invalid_data")
    (root / "data" / "text.csv").write_text("a,b,c,d,label\n1,x,3,4,0\n")
    assert "non-numeric" in _fail(root, "text.csv", "invalid_data")


@pytest.mark.parametrize(("hp", "name"), [
    ({"epochs": 0}, "epochs"), ({"learning_rate": -1}, "learning_rate"),
    ({"batch_size": "big"}, "batch_size"), ({"alpha": 0}, "alpha"),
    ({"optimizer": "adagrad"}, "optimizer"), ({"test_size": 1.5}, "test_size"),
    ({"image_size": 40, "model": "inception"}, "image_size"),
    ({"bn_momentum": 1.0}, "bn_momentum"), ({"image_shape": [8]}, "image_shape"),
])
def test_invalid_hyperparameters(root: Path, hp: dict[str, Any], name: str) -> None:
    model_type = hp.pop("model", "mobilenet")
    assert repr(name) in _fail(root, "builtin:digits", "invalid_hyperparameters", model_type,
                               **hp)


def test_unknown_model_type_and_weights_path(root: Path) -> None:
    _fail(root, "builtin:digits", "unsupported_model_type", model_type="resnet")
    _fail(root, "builtin:digits", "data_not_found", weights_path="nowhere.h5")
