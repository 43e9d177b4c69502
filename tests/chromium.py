"""Headless Chromium for the playground's browser tests and benchmark: Debian's chromium and
chromium-driver driven by selenium, with the flags this machine needs (without the background-networking
ones Chromium keeps trying to reach Google's hosts, which the closed network refuses)."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1250",
)


def start_chromium(profile: Path, downloads: Path | None = None):
    """A selenium Chrome driver on a fresh profile folder; downloads (if given) land in `downloads`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if downloads is not None:
        prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        options.add_experimental_option("prefs", prefs)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
