"""Logging, configured once at start: JSON lines for machines, colour for people."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from lock_monitor.config import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL
from lock_monitor.views import printable

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")


def configure(level: str = DEFAULT_LOG_LEVEL, fmt: LogFormat = DEFAULT_LOG_FORMAT) -> None:
    """Render JSON when stderr is not a terminal (a container, a pipe), else the console."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [printable_values, structlog.dev.ConsoleRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def printable_values(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """For the console only: a key, a value or a server's error text must not drive the
    terminal. (Other values are rendered with repr, which escapes them already; JSON is exact.)"""
    return {
        key: printable(value) if isinstance(value, str) else value for key, value in event.items()
    }
