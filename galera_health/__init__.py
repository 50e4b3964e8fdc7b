"""galera-health: a cached, deadline-bound HTTP health agent for MariaDB Galera nodes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("galera_health")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
