"""Load a report in headless Chromium: console errors, undecoded images, dangling links, a screenshot.

Used by the browser test and to refresh the README's picture:

    python -m drover.report.browser runs/quickstart/report.html docs/report.png

Needs the Playwright Python package (the `dev` extra) and a Chromium binary given by
path (Debian's `chromium`; never `playwright install`, which downloads a browser).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

DEFAULT_CHROMIUM = os.environ.get("DROVER_TEST_CHROMIUM", "/usr/bin/chromium")


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)   # alt text of images that did not decode
    broken_links: list[str] = field(default_factory=list)    # local hrefs whose file does not exist
    images: int = 0
    links: int = 0


def check_page(html_path: str | Path, screenshot: str | Path | None = None, chromium: str = DEFAULT_CHROMIUM,
               width: int = 1280, height: int = 900) -> PageCheck:
    """Open `html_path` from disk; report what did not load; save a screenshot of the first screen."""
    from playwright.sync_api import sync_playwright

    result = PageCheck()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda msg: result.console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: result.console_errors.append(str(exc)))
            page.goto(Path(html_path).resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
            links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    result.images, result.links = len(images), len(links)
    result.broken_images = [alt for alt, ok in images if not ok]
    for link in links:
        url = urlparse(link)
        if url.scheme == "file" and not Path(unquote(url.path)).exists():
            result.broken_links.append(link)
        elif url.scheme not in ("file", "data"):
            result.broken_links.append(link)  # a report links nothing off the machine
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drover.report.browser", description=__doc__.split("\n")[0])
    parser.add_argument("html")
    parser.add_argument("screenshot")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM)
    args = parser.parse_args(argv)
    check = check_page(args.html, args.screenshot, args.chromium)
    problems = check.console_errors + check.broken_images + check.broken_links
    print(f"{check.images} images, {check.links} links, {len(problems)} problems; screenshot: {args.screenshot}")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
