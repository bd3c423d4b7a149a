"""`metaqa serve`: a real uvicorn server on localhost over a tiny ONNX reader, called over HTTP."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from metaqa.inference import OnnxPredictor
from metaqa.serving.app import Limits, create_app

from .conftest import reader_cfg

uvicorn = pytest.importorskip("uvicorn")


class Flaky:
    """A reader that fails on any batch holding the question "boom" (a model error mid-service)."""

    backend = "onnx"

    def __init__(self, reader) -> None:
        self.reader = reader

    def predict(self, records, *args, **kwargs):
        if any(r.question == "boom" for r in records):
            raise RuntimeError("simulated model failure")
        return self.reader.predict(records, *args, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(fp32_dir):
    """(base url, reader): the app under uvicorn in a thread, as `metaqa serve` runs it."""
    reader = OnnxPredictor(fp32_dir, threads=1, reader=reader_cfg())
    app = create_app(Flaky(reader), limits=Limits(max_question_chars=200, max_request_bytes=20_000),
                     max_batch=8, max_wait_ms=20)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url, reader
    server.should_exit = True
    thread.join(timeout=10)


def test_health_and_page(service):
    url, _ = service
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    page = httpx.get(url)
    assert page.status_code == 200 and 'id="question"' in page.text and "fetch(" in page.text


def test_an_answer_is_the_readers_answer(service, sample_records):
    url, reader = service
    r = sample_records[0]
    got = httpx.post(f"{url}/answer", json={"question": r.question, "context": r.context, "id": r.id}).json()
    want = reader.answer(r.question, r.context, r.id)
    assert got["answer"] == want.text and got["id"] == r.id and got["latency_ms"] > 0
    if want.text:
        assert r.context[got["start"]:got["end"]] == want.text


def test_concurrent_requests_are_micro_batched_and_none_is_lost(service, sample_records):
    url, reader = service
    before = httpx.get(f"{url}/stats").json()

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            calls = [client.post("/answer", json={"question": r.question, "context": r.context, "id": f"c{i}"})
                     for i, r in enumerate(sample_records * 2)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert [r.json()["id"] for r in responses] == [f"c{i}" for i in range(len(responses))]  # each its own answer
    expected = [p.text for p in reader.predict(sample_records * 2)]
    assert [r.json()["answer"] for r in responses] == expected
    after = httpx.get(f"{url}/stats").json()
    assert after["requests"] - before["requests"] == len(responses)
    assert after["batches"] - before["batches"] < len(responses)  # some answered together
    assert max(int(k) for k in after["batch_sizes"]) <= 8


@pytest.mark.parametrize("body, status, field", [
    ({"context": "Bees make honey."}, 422, "question"),
    ({"question": "", "context": "Bees make honey."}, 422, "question"),
    ({"question": "x" * 201, "context": "Bees make honey."}, 422, "question"),
    ({"question": "What?", "context": "c", "theme": "t"}, 422, "exactly one of `context`"),
    ({"question": "What?"}, 422, "exactly one of `context`"),
    ({"question": "What?", "context": 5}, 422, "context"),
    ({"question": "What?", "theme": "Beekeeping"}, 400, "theme"),
])
def test_bad_input_is_a_4xx_naming_the_field(service, body, status, field):
    url, _ = service
    response = httpx.post(f"{url}/answer", json=body)
    assert response.status_code == status and field in response.json()["detail"]


def test_an_oversized_or_malformed_body_is_refused_and_the_worker_lives_on(service):
    url, _ = service
    big = httpx.post(f"{url}/answer", json={"question": "What?", "context": "word " * 10_000})
    assert big.status_code == 413 and "over the limit" in big.json()["detail"]
    broken = httpx.post(f"{url}/answer", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422
    failed = httpx.post(f"{url}/answer", json={"question": "boom", "context": "Bees make honey."})
    assert failed.status_code == 500 and "simulated model failure" in failed.json()["detail"]
    fine = httpx.post(f"{url}/answer", json={"question": "What do bees make?", "context": "Bees make honey."})
    assert fine.status_code == 200  # the failure answered its own request only


def chromium_driver():
    """Headless Debian chromium through its chromedriver (never a browser download), or a skip
    that says what to install."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra has it)")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no chromium + chromedriver on PATH: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_answers_a_question_in_a_real_browser(service, sample_records):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, reader = service
    record = sample_records[1]
    expected = reader.answer(record.question, record.context).text or "(no answer)"
    browser = chromium_driver()
    try:
        browser.get(url + "/")
        browser.find_element(By.ID, "question").send_keys(record.question)
        browser.execute_script("document.getElementById('context').value = arguments[0]", record.context)
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "answer").text.strip())
        assert browser.find_element(By.ID, "answer").text.strip() == expected.strip()
        assert "ms" in browser.find_element(By.ID, "meta").text
    finally:
        browser.quit()


def test_serve_stage_checks_its_dirs_before_listening(stage_cfg, fp32_dir, tmp_path):
    from metaqa.config import ConfigError
    from metaqa.stages import serve

    with pytest.raises(ConfigError, match="model_dir"):
        serve.build_app(stage_cfg("serve", [f"model_dir={tmp_path / 'missing'}"]))
    with pytest.raises(ConfigError, match="index_dir"):
        serve.build_app(stage_cfg("serve", [f"model_dir={fp32_dir}", f"index_dir={tmp_path / 'no_index'}"]))
    app = serve.build_app(stage_cfg("serve", [f"model_dir={fp32_dir}", "max_batch=4"]))
    assert app.state.batcher.max_batch == 4
