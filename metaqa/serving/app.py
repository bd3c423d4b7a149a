"""The reader as an HTTP JSON service (FastAPI): `POST /answer`, `GET /health`, `GET /stats` and a
small page at `/` to try questions.

`POST /answer` takes `{"question", "context"}` (read directly, micro-batched with concurrent
requests) or `{"question", "theme"}` (the theme's paragraphs retrieved first, when the service was
started with a retrieval index). Bad input is a 4xx whose message names the field; a request over
`max_request_bytes` is refused with 413 before it is parsed; a failing model call answers that
request with 500 and the worker stays up.
"""

# (no `from __future__ import annotations`: FastAPI reads the request model, a class made per
# service for its limits, from the endpoint's annotation at runtime)
import html
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, model_validator

from metaqa.export.io import prediction_row
from metaqa.inference import make_record
from metaqa.serving.batcher import MicroBatcher


class Limits(BaseModel):
    max_question_chars: int = 1_000
    max_context_chars: int = 50_000
    max_request_bytes: int = 256_000


def request_model(limits: Limits):
    class AnswerRequest(BaseModel):
        question: str = Field(min_length=1, max_length=limits.max_question_chars)
        context: str | None = Field(default=None, min_length=1, max_length=limits.max_context_chars)
        theme: str | None = Field(default=None, min_length=1, max_length=500)
        id: str = Field(default="q0", max_length=200)

        @model_validator(mode="after")
        def one_source(self):
            if (self.context is None) == (self.theme is None):
                raise ValueError("pass exactly one of `context` (read it) or `theme` (retrieve its paragraphs)")
            if not self.question.strip():
                raise ValueError("`question` is blank")
            return self

    return AnswerRequest


def _field_errors(err: RequestValidationError) -> list[str]:
    messages = []
    for e in err.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        messages.append(f"{where}: {e.get('msg', 'invalid')}")
    return messages


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>metaqa reader</title>
<style>body{{font-family:sans-serif;max-width:48rem;margin:2rem auto}}textarea,input{{width:100%}}
#answer{{font-size:1.3rem;margin-top:1rem}}#meta{{color:#666}}</style></head>
<body><h1>metaqa reader</h1><p id="model">{model}</p>
<form id="ask"><label>Question<input id="question" name="question" required></label>
<label>Context<textarea id="context" name="context" rows="8" required></textarea></label>
<button id="submit" type="submit">Answer</button></form>
<div id="answer"></div><div id="meta"></div>
<script>
document.getElementById("ask").addEventListener("submit", async (e) => {{
  e.preventDefault();
  const body = {{question: document.getElementById("question").value,
                 context: document.getElementById("context").value}};
  const r = await fetch("answer", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                   body: JSON.stringify(body)}});
  const data = await r.json();
  document.getElementById("answer").textContent = r.ok ? (data.answer || "(no answer)") : ("error: " + data.detail);
  document.getElementById("meta").textContent = r.ok ? `score ${{data.score}} · ${{data.latency_ms}} ms` : "";
}});
</script></body></html>"""


def create_app(reader, pipeline=None, limits: Limits | None = None, max_batch: int = 8,
               max_wait_ms: float = 5.0, name: str = "metaqa reader") -> FastAPI:
    """`reader`: a metaqa Predictor (its batched `predict` answers a micro-batch); `pipeline`: an
    optional RetrieveThenRead for `{question, theme}` requests."""
    limits = limits or Limits()
    AnswerRequest = request_model(limits)
    batcher = MicroBatcher(reader.predict, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=name, lifespan=lifespan)
    app.state.batcher = batcher

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
            return JSONResponse({"detail": f"body: {length} bytes is over the limit of {limits.max_request_bytes}"},
                                status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": "; ".join(_field_errors(err))}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.format(model=html.escape(name))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "backend": getattr(reader, "backend", "?"),
                "retrieval": pipeline is not None}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return batcher.stats.as_dict()

    @app.post("/answer")
    async def answer(body: AnswerRequest):  # type: ignore[valid-type]
        started = time.perf_counter()
        try:
            if body.context is not None:
                row = prediction_row(await batcher.answer(make_record(body.question, body.context, body.id)))
            elif pipeline is None:
                return JSONResponse({"detail": "theme: this service has no retrieval index; send `context`, or "
                                               "start it with pipeline.index_dir=<a metaqa pipeline index>"},
                                    status_code=400)
            else:
                try:
                    result = await batcher.run_exclusive(pipeline.answer, body.question, body.theme, body.id)
                except KeyError as err:
                    return JSONResponse({"detail": f"theme: {err.args[0] if err.args else body.theme}"},
                                        status_code=404)
                row = result.as_row()
        except Exception as err:  # the model failed on this request: say so, keep serving
            return JSONResponse({"detail": f"reader failed: {type(err).__name__}: {err}"}, status_code=500)
        row["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return row

    return app
