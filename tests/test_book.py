"""Checks of the Jupyter Book: its table of contents, Colab links, and the rendered pages.

Two kinds of tests:

* fast ones (no browser, no build): `_toc.yml` lists every notebook, every listed file
  exists, and the Colab URL that the theme derives from `_config.yml` is well formed;
* `@pytest.mark.browser` ones: open every page of an already built book
  (`_build/html`, from `jupyter-book build . -W -n --keep-going`) in headless Chromium
  and check the rendered DOM: a title, the notebook figures loaded, the Colab link, no
  traceback, no unresolved glue value, math typeset, nothing fetched from the network;
  and, at a desktop (1280 px) and a phone (412 px) width: no nbval marker or papermill
  parameters cell on the page, no horizontal overflow of the page or its article, every
  image loaded, exactly one search box visible.

The fast ones also cover the book's local extensions (author-year bibliography labels, the
theme's single search box, the link-check policy) and scripts/check_links.py.

The browser tests skip, with the reason, when the book is not built (or older than its
sources), or when Chromium / chromedriver / selenium are missing. Set MTL_REQUIRE_BOOK=1
to turn those skips into failures (CI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from binascii import a2b_base64
from mimetypes import guess_extension
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
NOTEBOOK_DIR = ROOT / "notebooks"

COLAB_RE = re.compile(
    r"^https://colab\.research\.google\.com/github/"
    r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)/(?P<repo>[A-Za-z0-9._-]+)/"
    r"blob/main/notebooks/(?P<name>[A-Za-z0-9_.-]+)\.ipynb$"
)
# myst-nb's mime priority for the html builder (myst_nb.core.render.base_render_priority)
HTML_MIME_PRIORITY = [
    "application/vnd.jupyter.widget-view+json",
    "application/javascript",
    "text/html",
    "image/svg+xml",
    "image/png",
    "image/gif",
    "image/jpeg",
    "text/markdown",
    "text/latex",
    "text/plain",
]
IMAGE_MIMES = {"image/svg+xml", "image/png", "image/gif", "image/jpeg"}


# ---------------------------------------------------------------- reading the book's sources


def load_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf8")) or {}


def toc_files() -> list[str]:
    """Every file of _toc.yml, in reading order, as written there (no extension)."""
    toc = load_yaml("_toc.yml")
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key))
    return [str(Path(f).with_suffix("")) if Path(f).suffix in {".md", ".ipynb"} else f for f in files]


def source_of(docname: str) -> Path:
    for suffix in (".ipynb", ".md"):
        path = ROOT / f"{docname}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(f"{docname}: neither .ipynb nor .md exists")


def read_notebook(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf8"))
    for cell in nb.get("cells", []):  # join multi-line strings like nbformat does
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        for output in cell.get("outputs", []):
            for mime, value in output.get("data", {}).items():
                if isinstance(value, list):
                    output["data"][mime] = "".join(value)
    return nb


def first_heading(path: Path) -> str | None:
    """Text of the first level-1 Markdown heading of a page, without Markdown markup."""
    if path.suffix == ".ipynb":
        texts = [c["source"] for c in read_notebook(path)["cells"] if c["cell_type"] == "markdown"]
    else:
        texts = [path.read_text(encoding="utf8")]
    for text in texts:
        for line in text.splitlines():
            match = re.match(r"^#\s+(.+?)\s*#*\s*$", line)
            if match:
                return normalize_title(match.group(1))
    return None


def normalize_title(text: str) -> str:
    text = re.sub(r"[`*_]", "", text)
    text = text.rstrip().rstrip("#¶").rstrip()
    return " ".join(text.split())


def expected_images(path: Path) -> list[str]:
    """File names (sha256 + extension, as myst-nb writes them) of the images a notebook shows."""
    names = []
    for cell in read_notebook(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & {"remove-cell", "remove_cell", "remove-output", "remove_output"}:
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            chosen = next((m for m in HTML_MIME_PRIORITY if m in data), None)
            if chosen not in IMAGE_MIMES:
                continue
            content = data[chosen]
            if chosen == "image/svg+xml":
                raw = os.linesep.join(content.splitlines()).encode("utf-8")
            else:
                raw = a2b_base64(content)
            names.append(hashlib.sha256(raw).hexdigest() + (guess_extension(chosen) or "." + chosen.rsplit("/")[-1]))
    return names


def colab_url(docname: str) -> str:
    """The Colab URL sphinx-book-theme builds for a notebook page (header_buttons/launch.py)."""
    config = load_yaml("_config.yml")
    repo_url = config["repository"]["url"].strip("/")
    branch = config["repository"].get("branch", "main")
    book_path = (config["repository"].get("path_to_book") or "").strip("/")
    base = config["launch_buttons"]["colab_url"].strip("/")
    parsed = urlparse(repo_url)
    assert parsed.netloc == "github.com", f"Colab links need a GitHub repository, not {repo_url}"
    owner, repo = parsed.path.strip("/").split("/")[-2:]
    rel = f"{book_path}/{docname}.ipynb" if book_path else f"{docname}.ipynb"
    return f"{base}/github/{owner}/{repo}/blob/{branch}/{rel}"


TOC = toc_files()
NOTEBOOK_PAGES = [d for d in TOC if (ROOT / f"{d}.ipynb").exists()]


# ---------------------------------------------------------------- fast tests (no browser)


def test_toc_lists_every_notebook():
    on_disk = sorted(str(p.relative_to(ROOT).with_suffix("")) for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert on_disk, "no notebooks in notebooks/"
    missing = [n for n in on_disk if n not in TOC]
    assert not missing, f"notebooks not listed in _toc.yml: {missing}"
    assert len(TOC) == len(set(TOC)), f"_toc.yml lists a file twice: {TOC}"


def missing_sources(docnames: list[str]) -> list[str]:
    """The docnames of _toc.yml for which neither an .ipynb nor an .md file exists."""
    return [d for d in docnames if not any((ROOT / f"{d}{suffix}").is_file() for suffix in (".ipynb", ".md"))]


def test_toc_files_exist():
    assert TOC[0] == "book/intro" and len(TOC) >= 1 + len(NOTEBOOK_PAGES) >= 11, TOC  # the walk found every part
    missing = missing_sources(TOC)
    assert not missing, f"_toc.yml lists files that do not exist (neither .ipynb nor .md): {missing}"
    assert missing_sources(["book/no-such-page"]) == ["book/no-such-page"]  # the check itself can fail


def test_colab_urls_well_formed():
    config = load_yaml("_config.yml")
    assert config["repository"]["branch"] == "main"
    assert config["launch_buttons"]["colab_url"].rstrip("/") == "https://colab.research.google.com"
    assert NOTEBOOK_PAGES, "no notebook pages in _toc.yml"
    for docname in NOTEBOOK_PAGES:
        url = colab_url(docname)
        match = COLAB_RE.match(url)
        assert match, f"malformed Colab URL for {docname}: {url}"
        assert (ROOT / "notebooks" / f"{match['name']}.ipynb").exists(), url


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bibliography_is_author_year_like_the_citations():
    config = load_yaml("_config.yml")["sphinx"]
    assert config["config"]["bibtex_reference_style"] == "author_year"
    assert config["config"]["bibtex_default_style"] == "authoryear"
    assert config["local_extensions"].get("author_year_bibliography") == "book/_ext"
    from pybtex.database import parse_file

    ext = load_module(ROOT / "book" / "_ext" / "author_year_bibliography.py")
    entries = parse_file(str(ROOT / "book" / "references.bib")).entries
    style = ext.AuthorYearStyle()
    formatted = list(style.format_entries(entries.values()))
    labels = {entry.key: entry.label for entry in formatted}
    assert labels["wang2020minilm"] == "Wang et al., 2020"
    assert labels["li2002trec"] == "Li and Roth, 2002"
    assert labels["tjongkimsang2003conll"] == "Tjong Kim Sang and De Meulder, 2003"
    assert len(set(labels.values())) == len(labels), "two entries share a label"
    assert all(re.search(r", \d{4}[a-z]?$", label) for label in labels.values()), labels
    keys = [entry.key for entry in formatted]
    first_author = [labels[k].split(" ")[0].lower() for k in keys]
    assert first_author == sorted(first_author), f"entries are not ordered by author: {keys}"
    same = [ext.author_year(e) for e in (entries["wang2019glue"], entries["wang2020minilm"])]
    assert same == ["Wang et al., 2019", "Wang et al., 2020"]


def test_one_search_box_in_the_theme_options():
    ext = load_module(ROOT / "book" / "_ext" / "reader_layout.py")

    class Config:
        html_theme_options = {"repository_url": "x"}

    config = Config()
    ext.theme_options(None, config)
    assert config.html_theme_options == {"repository_url": "x", "navbar_persistent": []}
    assert (ROOT / "book" / "_static" / ext.CSS).is_file()
    assert load_yaml("_config.yml")["sphinx"]["local_extensions"].get("reader_layout") == "book/_ext"


def test_linkcheck_skips_external_links_unless_asked(monkeypatch):
    ext = load_module(ROOT / "book" / "_ext" / "link_policy.py")

    class Config:
        linkcheck_ignore: list = []
        linkcheck_anchors = True
        linkcheck_timeout = None
        linkcheck_retries = 1

    monkeypatch.delenv("MTL_LINKCHECK_EXTERNAL", raising=False)
    offline = Config()
    ext.external_links_policy(None, offline)
    assert offline.linkcheck_ignore == [ext.EXTERNAL]
    monkeypatch.setenv("MTL_LINKCHECK_EXTERNAL", "1")
    online = Config()
    online.linkcheck_ignore = []
    ext.external_links_policy(None, online)
    assert online.linkcheck_ignore == [] and online.linkcheck_anchors and online.linkcheck_retries >= 2
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\blinkcheck\b", makefile, re.M), "make test does not run the link check"


def test_check_links_finds_missing_files_and_anchors(tmp_path):
    checker = load_module(ROOT / "scripts" / "check_links.py")
    (tmp_path / "book").mkdir()
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.css").write_text("")
    (tmp_path / "index.html").write_text(
        '<link rel="stylesheet" href="_static/x.css"><a href="book/a.html#there">ok</a>'
        '<a href="book/a.html#nowhere">bad anchor</a><a href="book/b.html">bad file</a>'
        '<a href="https://example.org/x#y">external</a><a href="#">top</a><a href="#self">self</a><p id="self"></p>'
    )
    (tmp_path / "book" / "a.html").write_text('<section id="there"></section><img src="../_static/none.png">')
    problems = checker.broken_links(tmp_path)
    assert len(problems) == 3, problems
    assert any("#nowhere" in p for p in problems) and any("b.html" in p for p in problems)
    assert any("none.png" in p for p in problems)


# ---------------------------------------------------------------- browser tests


def _skip_or_fail(reason: str):
    if os.environ.get("MTL_REQUIRE_BOOK") == "1":
        pytest.fail(f"{reason} (MTL_REQUIRE_BOOK=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def built_book() -> Path:
    if not (HTML / "index.html").exists():
        _skip_or_fail("book not built: run `jupyter-book build . -W -n --keep-going` first (no _build/html)")
    stale = []
    for docname in TOC:
        page = HTML / f"{docname}.html"
        if not page.exists():
            _skip_or_fail(f"book build is incomplete: {page.relative_to(ROOT)} missing; rebuild the book")
        if source_of(docname).stat().st_mtime > page.stat().st_mtime:
            stale.append(docname)
    if stale:
        _skip_or_fail(f"book build is older than its sources ({', '.join(stale)}); rebuild the book")
    return HTML


@pytest.fixture(scope="module")
def browser(built_book):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed (pip install selenium)")
    chromium = os.environ.get("MTL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = os.environ.get("MTL_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium:
        _skip_or_fail("Chromium not found (apt-get install chromium chromium-driver)")
    if not driver_path:
        _skip_or_fail("chromedriver not found (apt-get install chromium-driver)")

    profile = tempfile.mkdtemp(prefix="book-test-chromium-")
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
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
        # Nothing may come from the network: every host name fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# Runs in the page once it has loaded: waits for every image and for MathJax, then
# reports what the checks need.
COLLECT_JS = r"""
return (async () => {
  try {
    const isRemote = (u) => /^(https?:)?\/\//i.test((u || "").trim());
    const timeout = (ms, value) => new Promise((r) => setTimeout(() => r(value), ms));
    const imgs = Array.from(document.images);
    imgs.forEach((i) => { i.loading = "eager"; });
    const settle = (i) => i.complete ? Promise.resolve() : Promise.race([timeout(20000), new Promise((r) => {
      i.addEventListener("load", r, {once: true});
      i.addEventListener("error", r, {once: true});
    })]);
    const mathjax = (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)
      ? Promise.race([window.MathJax.startup.promise.then(() => "ok", (e) => "error: " + e),
                      timeout(20000, "timed out after 20 s")])
      : Promise.resolve("absent");
    const [mj] = await Promise.all([mathjax, ...imgs.map(settle)]);

    const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    const h1 = article.querySelector("h1");
    const remote = [];
    const check = (sel, attr) => document.querySelectorAll(sel).forEach((e) => {
      const v = e.getAttribute(attr);
      if (isRemote(v)) remote.push(`<${e.tagName.toLowerCase()} ${attr}="${v}">`);
    });
    check("script[src]", "src"); check("img[src]", "src"); check("iframe[src]", "src");
    check("source[src]", "src"); check("video[src]", "src"); check("audio[src]", "src");
    check("embed[src]", "src"); check("object[data]", "data"); check("img[srcset]", "srcset");
    document.querySelectorAll("link[href]").forEach((e) => {
      const rel = (e.getAttribute("rel") || "").toLowerCase();
      if (/canonical|alternate/.test(rel)) return;  // metadata, nothing is fetched
      if (isRemote(e.getAttribute("href"))) remote.push(`<link rel="${rel}" href="${e.getAttribute("href")}">`);
    });
    performance.getEntriesByType("resource").forEach((e) => {
      if (/^https?:/i.test(e.name)) remote.push(`fetched ${e.name}`);
    });
    return {
      title: document.title,
      h1: h1 ? h1.textContent : null,
      text: article.textContent,
      images: imgs.map((i) => ({
        src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth,
        in_output: !!i.closest(".cell_output, .output"),
      })),
      colab: Array.from(document.querySelectorAll("a[href*='colab.research.google.com']"))
        .map((a) => ({href: a.getAttribute("href"), text: a.textContent.trim()})),
      error_blocks: Array.from(document.querySelectorAll(
        ".output.traceback, .output.error, .output.stderr, .traceback .ansi-red-fg, .system-message"
      )).map((e) => e.getAttribute("class") + ": " + e.textContent.slice(0, 200)),
      glue_refs: Array.from(document.querySelectorAll(".glue-ref")).map((e) => ({
        text: e.textContent.trim(),
      })),
      math: document.querySelectorAll("span.math, div.math").length,
      mjx: document.querySelectorAll("mjx-container").length,
      mjx_errors: document.querySelectorAll("mjx-merror").length,
      mathjax: mj,
      remote: remote,
    };
  } catch (err) {
    return {script_error: String(err) + "\n" + (err.stack || "")};
  }
})();
"""


def render(browser, docname: str) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    url = (HTML / f"{docname}.html").as_uri()
    browser.get_log("browser")  # drop the previous page's messages
    browser.get(url)
    # With file:// URLs, get() can return before the new document has replaced the old one.
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return [document.URL, document.readyState]") == [url, "complete"]
    )
    page = browser.execute_script(COLLECT_JS)  # WebDriver waits for the returned promise
    assert "script_error" not in page, f"{docname}: the page check script failed: {page['script_error']}"
    # uncaught JavaScript exceptions and resources that failed to load (missing local files)
    page["console_errors"] = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry.get("level") == "SEVERE" and entry.get("source") in {"javascript", "network"}
    ]
    return page


@pytest.mark.browser
@pytest.mark.parametrize("docname", TOC)
def test_page_renders(browser, docname):
    source = source_of(docname)
    page = render(browser, docname)
    problems = []

    # a title, and the one the source gives
    h1 = normalize_title(page["h1"] or "")
    if not h1:
        problems.append("no <h1> title")
    expected = first_heading(source)
    if expected and h1 != expected:
        problems.append(f"title {h1!r} differs from the source's heading {expected!r}")
    if not page["title"].strip():
        problems.append("empty <title>")

    # no traceback, no error block, no unparsed role
    if "Traceback (most recent call last)" in page["text"]:
        problems.append("a Python traceback is shown")
    if page["error_blocks"]:
        problems.append(f"error/stderr blocks: {page['error_blocks']}")
    if re.search(r"\{(glue|paste|cite|doc)[^}]*\}`", page["text"]):
        problems.append("an unparsed role ({glue}`...` etc.) shows as text")

    # glue values: every reference resolved
    unresolved = [g for g in page["glue_refs"] if not g["text"]]
    if unresolved:
        problems.append(f"{len(unresolved)} glue reference(s) rendered empty (key missing in the notebook)")
    if any(g["text"].lower() in {"nan", "nan%", "none", "inf", "inf%"} for g in page["glue_refs"]):
        problems.append(f"a glued value is NaN/None/inf: {[g['text'] for g in page['glue_refs']]}")

    # every image loaded
    broken = [i["src"] for i in page["images"] if not (i["complete"] and i["width"] > 0)]
    if broken:
        problems.append(f"images that did not load: {broken}")

    # math typeset locally
    if page["math"]:
        if page["mathjax"] != "ok":
            problems.append(f"MathJax did not start: {page['mathjax']}")
        elif page["mjx"] < page["math"] or page["mjx_errors"]:
            problems.append(
                f"math not typeset: {page['math']} formulas, {page['mjx']} rendered, {page['mjx_errors']} errors"
            )

    if page["console_errors"]:
        problems.append(f"browser console errors: {page['console_errors']}")

    # nothing the page needs comes from the network
    if page["remote"]:
        problems.append(f"remote resources: {page['remote']}")

    if source.suffix == ".ipynb":
        # the Colab launch link
        want = colab_url(docname)
        hrefs = [c["href"] for c in page["colab"]]
        if want not in hrefs:
            problems.append(f"no Colab link {want}; found {hrefs}")
        for href in hrefs:
            if not COLAB_RE.match(href) or Path(urlparse(href).path).stem != Path(docname).name:
                problems.append(f"malformed Colab link {href}")
        # every stored image output shows, and loaded
        shown = {Path(i["src"]).name: i for i in page["images"] if i["in_output"]}
        for name in expected_images(source):
            image = shown.get(name)
            if image is None:
                problems.append(f"stored image output {name} is not on the page")
            elif not (image["complete"] and image["width"] > 0):
                problems.append(f"stored image output {name} did not load")

    assert not problems, f"{docname}:\n  " + "\n  ".join(problems)


@pytest.mark.browser
def test_navigation_lists_every_chapter(browser):
    """The sidebar of the landing page links every page of the table of contents, in order."""
    render(browser, TOC[0])
    hrefs = browser.execute_script(
        "return Array.from(document.querySelectorAll('.bd-sidebar-primary nav a.reference.internal'))"
        ".map((a) => a.href.split('#')[0]);"
    )
    expected = [(HTML / f"{d}.html").as_uri() for d in TOC]
    listed = [h for h in dict.fromkeys(hrefs) if h in expected]
    assert listed == expected, f"sidebar lists {listed}, expected {expected}"


# Runs after COLLECT_JS: what a reader sees at the current window width.
LAYOUT_JS = r"""
const visible = (e) => {
  const r = e.getBoundingClientRect();
  const shown = e.checkVisibility ? e.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})
                                  : e.offsetParent !== null;
  return shown && r.width > 0 && r.height > 0 && r.right > 0 && r.left < innerWidth && r.bottom > 0;
};
const describe = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
  (typeof e.className === "string" && e.className.trim() ? "." + e.className.trim().split(/\s+/).join(".") : "");
// every way into the search: fields, buttons, inputs (a dialog's input only counts when open)
const searches = Array.from(document.querySelectorAll(
  "button.search-button__button, .bd-search input, #searchbox input, input[type=search], form[role=search] input"
)).filter(visible).map((e) => describe(e) + " in " + describe(e.parentElement));
const doc = document.documentElement;
const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
// elements that stick out of the article and are not inside a container that scrolls or clips
const box = article.getBoundingClientRect();
const wide = [];
for (const e of article.querySelectorAll("*")) {
  const r = e.getBoundingClientRect();
  if (r.width === 0 || r.right <= box.right + 1) continue;
  let p = e.parentElement, contained = false;
  while (p && p !== article) {
    const o = getComputedStyle(p).overflowX;
    if (o === "auto" || o === "scroll" || o === "hidden" || o === "clip") { contained = true; break; }
    p = p.parentElement;
  }
  if (!contained) wide.push(describe(e) + " (" + Math.round(r.right - box.right) + " px)");
  if (wide.length >= 5) break;
}
const injected = Array.from(document.querySelectorAll(".tag_injected-parameters, .cell_input pre"))
  .filter((e) => e.classList.contains("tag_injected-parameters")
    || /^\s*# Parameters\s*$/m.test(e.textContent.split("\n")[0]))
  .map(describe);
return {
  width: innerWidth, searches: searches,
  page: [doc.scrollWidth, doc.clientWidth], article: [article.scrollWidth, article.clientWidth], wide: wide,
  nbval: /NBVAL/.test(document.body.textContent), injected: injected,
};
"""
WIDTHS = {"desktop": 1280, "phone": 412}


@pytest.fixture
def window(browser):
    """Sets the window width for one test, then restores the fixture's 1200 x 900."""

    def resize(width: int) -> None:
        browser.set_window_size(width, 900)

    yield resize
    browser.set_window_size(1200, 900)


@pytest.mark.browser
@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
@pytest.mark.parametrize("docname", TOC)
def test_page_reads_well(browser, window, docname, width):
    window(width)
    page = render(browser, docname)
    layout = browser.execute_script(LAYOUT_JS)
    assert layout["width"] == width, f"the window is {layout['width']} px wide, not {width}"
    problems = []
    if layout["nbval"]:
        problems.append("an nbval marker (NBVAL...) shows on the page: use the cell tags")
    if layout["injected"]:
        problems.append(f"papermill's injected-parameters cell shows: {layout['injected']}")
    page_width, viewport = layout["page"]
    if page_width > viewport + 1:
        problems.append(f"the page scrolls sideways: {page_width} px wide in a {viewport} px window")
    article_width, article_box = layout["article"]
    if article_width > article_box + 1 or layout["wide"]:
        problems.append(f"the article overflows ({article_width} > {article_box} px): {layout['wide']}")
    broken = [i["src"] for i in page["images"] if not (i["complete"] and i["width"] > 0)]
    if broken:
        problems.append(f"images that did not load: {broken}")
    if len(layout["searches"]) != 1:
        problems.append(f"{len(layout['searches'])} search boxes visible, not one: {layout['searches']}")
    assert not problems, f"{docname} at {width} px:\n  " + "\n  ".join(problems)


# Runs after COLLECT_JS at the desktop width: code blocks that scroll sideways, and output images
# that the page shrinks to fit the column (their text then reads smaller than the figure's dpi says).
CODE_AND_FIGURES_JS = r"""
const article = document.querySelector("article.bd-article");
const blocks = Array.from(article.querySelectorAll("div.cell_input div.highlight, div.cell_input pre"));
const scrolling = blocks.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => {
  const text = e.textContent.split("\n");
  const longest = Math.max(...text.map((l) => l.length));
  return `${e.tagName.toLowerCase()} ${e.scrollWidth} > ${e.clientWidth} px, longest line ${longest} chars: ` +
    JSON.stringify(text.find((l) => l.length === longest).slice(0, 60));
});
const shrunk = Array.from(article.querySelectorAll(".cell_output img"))
  .filter((i) => i.naturalWidth > 0 && i.getBoundingClientRect().width < i.naturalWidth - 1)
  .map((i) => `${i.getAttribute("src").split("/").pop()}: ${i.naturalWidth} px shown at ` +
    `${Math.round(i.getBoundingClientRect().width)} px`);
// the width of 88 characters in each code cell's own font, against the room its box leaves them
const narrow = Array.from(article.querySelectorAll("div.cell_input pre")).map((pre) => {
  const probe = document.createElement("span");
  probe.textContent = "0".repeat(88);
  pre.appendChild(probe);
  const need = probe.getBoundingClientRect().width;
  probe.remove();
  const style = getComputedStyle(pre);
  const room = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {need: need, room: room, font: style.fontSize, hidden: !!pre.closest("details")};
}).filter((b) => b.need > b.room + 0.5)
  .map((b) => `${b.hidden ? "folded " : ""}code cell: 88 characters of ${b.font} need ` +
    `${b.need.toFixed(1)} px, it has ${b.room.toFixed(1)} px`);
return {blocks: blocks.length, scrolling: scrolling, shrunk: shrunk, narrow: narrow};
"""


@pytest.mark.browser
@pytest.mark.parametrize("docname", NOTEBOOK_PAGES)
def test_code_cells_do_not_scroll_sideways(browser, window, docname):
    """At 1280 px every code cell's source fits its box (lines of at most 88 characters do, see
    book/_static/reader.css): a reader sees each line whole, without a sideways scroll."""
    window(WIDTHS["desktop"])
    render(browser, docname)
    found = browser.execute_script(CODE_AND_FIGURES_JS)
    assert found["blocks"], f"{docname}: no code cell found (did the page's markup change?)"
    assert not found["narrow"], f"{docname}: at 1280 px " + "; ".join(sorted(set(found["narrow"])))
    assert not found["scrolling"], f"{docname}: code cells scroll sideways at 1280 px:\n  " + "\n  ".join(
        found["scrolling"]
    )


@pytest.mark.browser
@pytest.mark.parametrize("docname", NOTEBOOK_PAGES)
def test_figures_are_not_shrunk_to_the_column(browser, window, docname):
    """A figure wider than the column is scaled down, and its text with it, below the body text's size;
    mtl_helpers.plots sizes figures for the column, and mtl_helpers.column_fit keeps what each figure draws
    inside its width as the notebook shows it (see tests/test_plots.py)."""
    window(WIDTHS["desktop"])
    render(browser, docname)
    found = browser.execute_script(CODE_AND_FIGURES_JS)
    assert not found["shrunk"], f"{docname}: figures shrunk to fit the column at 1280 px:\n  " + "\n  ".join(
        found["shrunk"]
    )
