"""structlog set-up shared by the gateway and the workers: JSON lines (or console), with what a
line is about (worker, job, request) bound as keys. Lines of the standard library's loggers
(uvicorn's server messages, libraries) go through the same renderer, so a process writes one
style only."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _orjson(value: object, **_: object) -> str:
    """JSONRenderer's serializer: orjson, a third of the standard library's cost per line (the
    gateway writes one access line per request); anything it cannot encode goes as str()."""
    return orjson.dumps(value, default=str).decode()


def configure(level: str = "INFO", json: bool = True) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson) if json
        else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)]))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.getLevelName(level.upper()))
