"""Serving a reader over HTTP: micro-batching and the FastAPI app (used by `metaqa serve`)."""
