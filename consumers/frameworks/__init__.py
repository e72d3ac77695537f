"""Framework modules behind one interface (``base.Framework``), loaded by worker type.

Which class implements a framework is what its installed plugin declares (``implementation``,
``"module:Class"``; schemas/plugins.py): aiq's own and third-party frameworks load the same way.
"""

from __future__ import annotations

from importlib import import_module

from consumers.frameworks.base import Framework
from schemas.catalogue import STATE


def implementation_of(name: str) -> str:
    """``module:Class`` of framework ``name`` (MODEL_FRAMEWORK); KeyError when no installed
    plugin declares it."""
    for loaded in STATE.plugins.values():
        if loaded.plugin.framework == name:
            return loaded.plugin.implementation
    raise KeyError(f"no installed plugin declares framework {name!r}")


def load_framework(name: str) -> Framework:
    """Import the framework module (and so the framework itself). ImportError when missing."""
    module_name, _, cls_name = implementation_of(name).partition(":")
    module = import_module(module_name)
    try:
        cls = getattr(module, cls_name)
    except AttributeError:
        raise ImportError(f"{module_name} has no {cls_name}") from None
    framework: Framework = cls()
    return framework
