"""An example aiq framework plugin: what it declares (this module) and how it runs
(``framework.py``).

This module is what the ``aiq.frameworks`` entry point names. It imports nothing heavy, so a
gateway (or ``aiq types``) can load the declaration without numpy; the implementation is named as
``"module:Class"`` and imported by a worker of the ``numpy-example`` type only.
"""

from __future__ import annotations

from schemas.plugins import FrameworkPlugin, ModelType, Parameter, WorkerTypeSpec

WORKER_TYPE = "numpy-example"
_COMMON = (
    Parameter(name="test_size", type="float", default=0.2, gt=0, lt=1,
              doc="fraction of the rows held out to score the model"),
    Parameter(name="seed", type="int", default=0, ge=0, le=2**31 - 1,
              doc="seed of the split and of the mini-batch order"),
    Parameter(name="label_column", type="str", doc="the CSV column with the labels"),
)

PLUGIN = FrameworkPlugin(
    framework="numpy_example",
    implementation="aiq_example_plugin.framework:NumpyExampleFramework",
    doc="small numpy classifiers: softmax regression and nearest centroid",
    worker_types=(
        WorkerTypeSpec(name=WORKER_TYPE, distribution="numpy", version_spec=">=1.24",
                       requirement="aiq-example-plugin",
                       model_types=("softmax_regression", "nearest_centroid")),
    ),
    model_types=(
        ModelType(name="softmax_regression", cpu=WORKER_TYPE,
                  doc="multinomial logistic regression, mini-batch gradient descent",
                  parameters=(
                      Parameter(name="epochs", type="int", default=20, ge=1, le=1_000),
                      Parameter(name="learning_rate", type="float", default=0.5, gt=0, le=10),
                      Parameter(name="batch_size", type="int", default=64, ge=1, le=65_536),
                      Parameter(name="l2", type="float", default=1e-4, ge=0, le=10,
                                doc="weight decay"),
                      *_COMMON)),
        ModelType(name="nearest_centroid", cpu=WORKER_TYPE,
                  doc="each class's mean, shrunk toward the overall mean",
                  parameters=(
                      Parameter(name="shrinkage", type="float", default=0.0, ge=0, le=1),
                      *_COMMON)),
    ),
)
