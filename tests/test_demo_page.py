"""The demo page at `/`, driven in a real headless Chromium (system packages, Selenium): it lists the served
models, a translation (with its attention map) and a classification round-trip, generation streams, an
error shows the server's one line, and with an API key the page asks for it. The streaming endpoint is
also read directly as server-sent events."""

import json
import shutil
import urllib.request

import pytest
from helpers import ROOT, running

from nlp_rnn.deploy.serve import Limits, create_app, load_models

CHECKPOINTS = ROOT / "checkpoints"
KEY = "demo-key-123456"


@pytest.fixture(scope="module")
def models():
    specs = [("de-en", CHECKPOINTS / "multi30k-de-en"), ("sst2", CHECKPOINTS / "sst2")]
    return load_models(specs + [("chars", CHECKPOINTS / "shakespeare-char")], "cpu", "fp32")


def test_generation_streams_as_server_sent_events(models) -> None:
    with running(create_app(models, Limits())) as base:
        body = json.dumps({"texts": ["ROMEO:"], "max_tokens": 40, "seed": 1}).encode()
        request = urllib.request.Request(
            base + "/generate/stream", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = response.read().decode().strip().split("\n\n")
        pieces = [json.loads(e.removeprefix("data: "))["text"] for e in events if e.startswith("data: ")]
        assert len(pieces) > 1 and events[-1].startswith("event: done")
        done = json.loads(events[-1].split("data: ", 1)[1])
        assert "".join(pieces) == done["generations"][0]["text"]  # the pieces add up to the answer
        plain = urllib.request.Request(
            base + "/generate", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(plain, timeout=60) as response:
            assert json.loads(response.read())["generations"][0]["text"] == done["generations"][0]["text"]


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("chromium-browser"))):
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def wait_for(browser, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


@pytest.mark.slow
def test_the_page_translates_classifies_streams_and_shows_errors(browser, models) -> None:
    from selenium.webdriver.common.by import By

    with running(create_app(models, Limits())) as base:
        browser.get(base + "/")
        wait_for(browser, lambda b: b.find_elements(By.ID, "model-sst2"))
        assert {
            c.get_attribute("data-task") for c in browser.find_elements(By.CSS_SELECTOR, ".card[data-task]")
        } == {
            "translation",
            "classification",
            "language_model",
        }
        browser.find_element(By.ID, "input-de-en").send_keys("Ein Hund rennt über die Wiese.")
        browser.find_element(By.ID, "go-de-en").click()
        wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#result-de-en .best"))
        assert "dog" in browser.find_element(By.CSS_SELECTOR, "#result-de-en .best").text.lower()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#result-de-en ol.nbest li")) == 3
        assert browser.find_elements(By.CSS_SELECTOR, "#result-de-en table.att td")  # the attention map

        browser.find_element(By.ID, "input-sst2").send_keys("a gripping , beautifully acted film .")
        browser.find_element(By.ID, "go-sst2").click()
        wait_for(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#result-sst2 .bar")) == 2)
        assert browser.find_element(By.CSS_SELECTOR, "#result-sst2 .label").text.startswith("positive")

        browser.find_element(By.ID, "input-chars").send_keys("ROMEO:")
        browser.find_element(By.ID, "go-chars").click()
        wait_for(
            browser, lambda b: b.find_element(By.ID, "result-chars").get_attribute("data-done") == "true"
        )
        assert len(browser.find_element(By.ID, "result-chars").text) > len("ROMEO:")

        tokens = browser.find_element(By.ID, "tokens-chars")
        tokens.clear()
        tokens.send_keys("5000")  # above the server's limit: its one line is shown
        browser.find_element(By.ID, "go-chars").click()
        wait_for(browser, lambda b: b.find_element(By.ID, "error-chars").is_displayed())
        assert "max_tokens" in browser.find_element(By.ID, "error-chars").text


@pytest.mark.slow
def test_with_an_api_key_the_page_asks_for_it_and_sends_it(browser, models) -> None:
    from selenium.webdriver.common.by import By

    with running(create_app(models, Limits(), api_key=KEY)) as base:
        browser.get(base + "/")
        wait_for(browser, lambda b: b.find_element(By.ID, "key-box").is_displayed())
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.ID, "key-send").click()
        wait_for(browser, lambda b: b.find_elements(By.ID, "model-sst2"))
        browser.find_element(By.ID, "input-sst2").send_keys("dull and far too long .")
        browser.find_element(By.ID, "go-sst2").click()
        wait_for(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#result-sst2 .bar")) == 2)
        browser.execute_script("sessionStorage.clear()")
