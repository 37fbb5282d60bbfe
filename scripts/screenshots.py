"""Full-page screenshots of every page of the built book, at a desktop and a phone width.

    python scripts/screenshots.py [OUT] [--html _build/html] [--widths 1280 412] [--pages book/intro ...]

Opens each page of `_build/html` (build it first: `make book`) in headless Chromium, with the
same options as tests/test_book.py (nothing fetched from the network), and saves
`OUT/<width>/<page>.png` (default OUT: .scratch/screenshots, git-ignored) for a person to look
at. Also prints, per page and width, what overflows the page horizontally. Chromium and
chromedriver come from MTL_CHROMIUM / MTL_CHROMEDRIVER, else from PATH (Debian's chromium).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OVERFLOW_JS = r"""
const doc = document.documentElement;
const wide = [];
if (doc.scrollWidth > doc.clientWidth + 1) {
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.right > doc.clientWidth + 1 && r.width > 0 && getComputedStyle(e).position !== 'fixed') {
      let scroller = e.parentElement, clipped = false;
      while (scroller && scroller !== document.body) {
        const o = getComputedStyle(scroller).overflowX;
        if (o === 'auto' || o === 'scroll' || o === 'hidden' || o === 'clip') { clipped = true; break; }
        scroller = scroller.parentElement;
      }
      if (!clipped) wide.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
        (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\s+/).join('.') : ''));
    }
    if (wide.length > 5) break;
  }
}
return {scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, wide: wide};
"""


def pages_of(html: Path) -> list[str]:
    """Every page of the book (not the theme's templates, search or index pages)."""
    skip = {"search", "genindex", "py-modindex"}
    names = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html).with_suffix("")
        if rel.parts[0].startswith("_") or str(rel) in skip:
            continue
        if 'http-equiv="Refresh"' in path.read_text(encoding="utf8", errors="ignore")[:500]:
            continue  # a redirect (index.html -> the root page)
        names.append(str(rel))
    return names


def browser(width: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = os.environ.get("MTL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = os.environ.get("MTL_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver_path:
        sys.exit(
            "Chromium or chromedriver not found: bash scripts/ensure_chromium.sh, or set MTL_CHROMIUM/MTL_CHROMEDRIVER"
        )
    profile = tempfile.mkdtemp(prefix="book-screenshots-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},900",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    return driver, profile


def shoot(driver, url: str, out: Path, width: int) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(width, 900)
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const imgs = Array.from(document.images); imgs.forEach((i) => { i.loading = 'eager'; });"
        "const mj = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();"
        "Promise.race([Promise.all([mj, ...imgs.map((i) => i.complete ? 0 : new Promise((r) => {"
        "  i.onload = r; i.onerror = r; }))]), new Promise((r) => setTimeout(r, 15000))]).then(() => done());"
    )
    overflow = driver.execute_script(OVERFLOW_JS)
    # No transitions: capturing beyond the viewport resizes it, and the theme's sidebar would
    # otherwise be photographed halfway through sliding back in; and the sidebar, which the theme
    # scrolls to the current chapter, shown from its top.
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const style = document.createElement('style');"
        "style.textContent = '*, *::before, *::after { transition: none !important; animation: none !important; }';"
        "document.head.appendChild(style); window.scrollTo(0, 0);"
        "document.querySelectorAll('*').forEach((e) => { if (e.scrollTop) e.scrollTop = 0; });"  # the sidebar
        "requestAnimationFrame(() => requestAnimationFrame(() => done()));"
    )
    # The whole page, not just the window: capture beyond the viewport, clipped to the content.
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return overflow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / ".scratch" / "screenshots")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--widths", type=int, nargs="+", default=[1280, 412])
    parser.add_argument("--pages", nargs="+", help="page names like book/intro (default: every page)")
    args = parser.parse_args()
    html = args.html.resolve()
    if not (html / "index.html").exists():
        sys.exit(f"{html}: no built book; run `make book` first")
    pages = args.pages or pages_of(html)
    problems = 0
    for width in args.widths:
        driver, profile = browser(width)
        try:
            for page in pages:
                target = args.out / str(width) / f"{page}.png"
                overflow = shoot(driver, (html / f"{page}.html").as_uri(), target, width)
                note = ""
                if overflow["scrollWidth"] > overflow["clientWidth"] + 1:
                    problems += 1
                    wide = ", ".join(overflow["wide"])
                    note = f"  page overflows: {overflow['scrollWidth']} > {overflow['clientWidth']} px ({wide})"
                print(f"{width:>5} px  {page:<40} {target}{note}")
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
    print(f"{len(pages) * len(args.widths)} screenshots in {args.out}; {problems} with horizontal overflow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
