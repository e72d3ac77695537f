"""Framework modules behind one interface (``base.Framework``), loaded by worker type."""

from __future__ import annotations

from importlib import import_module

from consumers.frameworks.base import Framework

# framework name (MODEL_FRAMEWORK) -> "module:Class"
_MODULES = {
    "diagnostic": "consumers.frameworks.diagnostic:DiagnosticFramework",
    "sklearn": "consumers.frameworks.sklearn:SklearnFramework",
    "pytorch": "consumers.frameworks.pytorch:PytorchFramework",
    "tensorflow": "consumers.frameworks.tensorflow:TensorflowFramework",
}


def load_framework(name: str) -> Framework:
    """Import the framework module (and so the framework itself). ImportError when missing."""
    module_name, _, cls_name = _MODULES[name].partition(":")
    cls = getattr(import_module(module_name), cls_name)
    framework: Framework = cls()
    return framework
