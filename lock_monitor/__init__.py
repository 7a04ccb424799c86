"""lock-monitor: a Prometheus exporter for distributed locks kept in Redis."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lock-monitor")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
