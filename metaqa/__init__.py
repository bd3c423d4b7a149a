"""metaqa: config-driven extractive QA with shallow transformers (see README.md)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metaqa")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"
