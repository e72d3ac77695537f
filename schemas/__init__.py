"""Pydantic models for requests, stored records, events and worker info. No I/O."""


def aiq_version() -> str:
    """The installed aiq distribution's version (``0.0.0`` when run from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aiq")
    except PackageNotFoundError:  # pragma: no cover
        return "0.0.0"
