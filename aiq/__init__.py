"""aiq: an AI job queue on Redis Streams. The ``aiq`` CLI is a thin layer over the packages
schemas, streams, gateway and consumers. Importing ``aiq`` stays light: a command job's program
calls ``aiq.report(...)`` (aiq/report.py, standard library only)."""

from importlib.metadata import PackageNotFoundError, version

from aiq.report import report

__all__ = ["__version__", "report"]

try:
    __version__ = version("aiq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
