"""Check every link inside the built book: each relative href/src of every HTML page points at a
file that exists, and each #anchor at an id (or name) in the page it points to.

    python scripts/check_links.py [_build/html]

External links (with a scheme, or starting with //) are left to Sphinx's linkcheck builder.
Prints one line per broken link and exits 1 when there is any.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ATTRIBUTES = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src", "source": "src"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, value)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        for key in ("id", "name") if tag in {"a", "span", "div", "section", "dt"} else ("id",):
            if attributes.get(key):
                self.ids.add(attributes[key])
        if tag in ATTRIBUTES and attributes.get(ATTRIBUTES[tag]) is not None:
            if tag == "link" and "canonical" in (attributes.get("rel") or ""):
                return
            self.links.append((tag, attributes[ATTRIBUTES[tag]]))


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf8", errors="replace"))
    return page


def is_external(value: str) -> bool:
    parts = urlsplit(value)
    return bool(parts.scheme) or value.startswith("//")


def book_pages(html: Path) -> list[Path]:
    """The book's pages: not the theme's template fragments copied into _static/ and the like."""
    return [p for p in sorted(html.rglob("*.html")) if not p.relative_to(html).parts[0].startswith("_")]


def broken_links(html: Path) -> list[str]:
    pages = {path.resolve(): parse(path) for path in book_pages(html)}
    problems = []
    for path, page in pages.items():
        where = path.relative_to(html.resolve())
        for tag, value in page.links:
            value = value.strip()
            if not value or value == "#" or is_external(value) or value.startswith(("javascript:", "data:")):
                continue
            parts = urlsplit(value)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{where}: <{tag}> {value}: no file {unquote(parts.path)}")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if fragment not in ids:
                    problems.append(f"{where}: <{tag}> {value}: no id {fragment!r} in {target.name}")
    return problems


def main() -> int:
    html = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    if not (html / "index.html").exists():
        print(f"{html}: no built book (index.html missing)")
        return 1
    problems = broken_links(html)
    for problem in problems:
        print(problem)
    pages = len(book_pages(html))
    print(f"check_links: {pages} pages, {len(problems)} broken internal links or anchors")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
