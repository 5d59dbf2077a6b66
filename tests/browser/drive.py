#!/usr/bin/env python3
"""Drives headless Chromium for the status page's end-to-end test (tests/tests/status_page.rs).

Reads one JSON command per line on stdin and answers each with one JSON line on stdout:
{"ok": true, "value": ...} or {"ok": false, "error": "..."}. Commands:
  open {url}                         load a page and wait until it has loaded
  click {css}                        click the first element matching css, wait for the new page
  wait {js, timeout}                 wait until the JS expression is truthy; returns its value
  eval {js}                          the value of a JS expression
  viewport {width, height, mobile}   emulate a screen (the device metrics, as a phone would report them)
  media {scheme}                     emulate prefers-color-scheme ("dark", "light"; "" for none);
                                     returns whether the page now matches the dark scheme
  screenshot {path}                  save the whole page as PNG
  log {}                             the browser console's messages since the last call
  quit {}
Uses Debian's chromium and chromium-driver; Selenium Manager never downloads anything.
"""
import base64
import json
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
        "--no-default-browser-check", "--window-size=1280,900", f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def expression(js):
    return "return (" + js + ");"


def main():
    with tempfile.TemporaryDirectory(prefix="vantage-chromium-") as profile:
        driver = browser(profile)
        try:
            print(json.dumps({"ok": True, "value": driver.capabilities.get("browserVersion")}), flush=True)
            for line in sys.stdin:
                if not line.strip():
                    continue
                command = json.loads(line)
                name = command.get("cmd")
                try:
                    value = None
                    if name == "open":
                        driver.get(command["url"])
                        WebDriverWait(driver, 30).until(
                            lambda d: d.execute_script("return document.readyState") == "complete")
                    elif name == "click":
                        old = driver.find_element(By.TAG_NAME, "html")
                        driver.find_element(By.CSS_SELECTOR, command["css"]).click()
                        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "html") != old)
                        WebDriverWait(driver, 30).until(
                            lambda d: d.execute_script("return document.readyState") == "complete")
                        value = driver.current_url
                    elif name == "wait":
                        js = expression(command["js"])
                        value = WebDriverWait(driver, command.get("timeout", 30), poll_frequency=0.2).until(
                            lambda d: d.execute_script(js))
                    elif name == "eval":
                        value = driver.execute_script(expression(command["js"]))
                    elif name == "viewport":
                        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                            "width": command["width"], "height": command["height"],
                            "deviceScaleFactor": command.get("scale", 1), "mobile": command.get("mobile", False),
                        })
                        value = driver.execute_script("return window.innerWidth")
                    elif name == "media":
                        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                            "media": "",
                            "features": [{"name": "prefers-color-scheme", "value": command.get("scheme", "")}],
                        })
                        value = driver.execute_script(
                            "return window.matchMedia('(prefers-color-scheme: dark)').matches")
                    elif name == "screenshot":
                        shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                                      {"format": "png", "captureBeyondViewport": True})
                        with open(command["path"], "wb") as f:
                            f.write(base64.b64decode(shot["data"]))
                        value = command["path"]
                    elif name == "log":
                        value = [entry["message"] for entry in driver.get_log("browser")]
                    elif name == "quit":
                        print(json.dumps({"ok": True, "value": None}), flush=True)
                        break
                    else:
                        raise ValueError(f"unknown command {name!r}")
                    print(json.dumps({"ok": True, "value": value}), flush=True)
                except Exception as e:  # the test decides; it sees the page's state in the error
                    try:
                        where = driver.current_url + ", showing:\n" + driver.find_element(By.TAG_NAME, "body").text[:3000]
                    except Exception:
                        where = "?"
                    print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e} (at {where})"}), flush=True)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
