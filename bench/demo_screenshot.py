"""The demo page's screenshot for the docs (docs/demo.png): serves the shipped models, fills in a
translation, a classification and a generation in headless Chromium, and saves the page.

    python bench/demo_screenshot.py [--output docs/demo.png]

Needs the serve extra, Selenium and Chromium with its driver (apt-get install chromium chromium-driver).
"""

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default=str(ROOT / "docs" / "demo.png"))
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from nlp_rnn.deploy.serve import Limits, create_app, load_models

    checkpoints = ROOT / "checkpoints"
    specs = [("de-en", checkpoints / "multi30k-de-en"), ("sentiment", checkpoints / "sst2")]
    specs.append(("shakespeare", checkpoints / "shakespeare-char"))
    app = create_app(load_models(specs, "cpu", "auto"), Limits())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1500"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(f"http://127.0.0.1:{args.port}/")
        wait.until(lambda b: b.find_elements(By.ID, "model-sentiment"))
        for name, text in (
            ("de-en", "Zwei Hunde spielen im Schnee."),
            ("sentiment", "A gripping, beautifully acted film! Go see it."),
            ("shakespeare", "ROMEO:"),
        ):
            browser.find_element(By.ID, f"input-{name}").send_keys(text)
            browser.find_element(By.ID, f"go-{name}").click()
            wait.until(lambda b, n=name: b.find_element(By.ID, f"go-{n}").is_enabled())
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1100, height + 40)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(args.output)
        print(args.output)
    finally:
        browser.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
