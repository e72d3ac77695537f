"""aiq: an AI job queue on Redis Streams. The ``aiq`` CLI is a thin layer over the packages
schemas, streams, gateway and consumers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aiq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
