"""The book's stored records for a reader outside the checkout (Colab): fetched file by file from the
repository (index first), every name checked, refreshed at every call; and a reader's own records
combined with them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.request import urlopen

from .jsonio import atomic_write_bytes
from .locations import SCENARIO_NAME, book_root, check_folder_name, results_dir, shown_path
from .records import INDEX, RunRecord, load_records, read_records, record_matches


def _download(url: str) -> bytes:
    with urlopen(url, timeout=30) as response:  # noqa: S310 - a fixed https URL of the book's repository
        return response.read()


def stored_records(
    profile: str, repository_url: str, branch: str = "main", cache: str | os.PathLike | None = None, fetch=_download
) -> tuple[list[RunRecord], str]:
    """The book's own stored records of `profile`: from the repository checkout when this runs inside
    one, else fetched from the repository on GitHub (index first, then each record) into `cache`.
    Returns the records and where they came from; none (and the reason) when neither is reachable."""
    check_folder_name("Profile", profile)
    root = book_root()
    if root is not None and (root / "results").is_dir():
        # Inside a checkout its results/ are the book's stored records: nothing to fetch, even where a
        # profile has none (the checkout is the repository at this commit)
        if not (root / "results" / profile).is_dir():
            return [], f"the book's stored records (it stores none of this profile: results/{profile} is absent)"
        return load_records(profile, root=root / "results"), f"the book's stored records in results/{profile}"
    owner_repo = repository_url.rstrip("/").split("github.com/")[-1]
    raw = f"https://raw.githubusercontent.com/{owner_repo}/{branch}/results/{profile}"
    cache = Path(cache) if cache is not None else Path.home() / ".cache" / "mtl_helpers" / "results"
    folder = (cache / profile).resolve()
    try:
        names = json.loads(fetch(f"{raw}/{INDEX}"))["records"]
        if not isinstance(names, list):
            raise ValueError("the index's records are not a list")
        bad = next((n for n in names if _cached_record_path(folder, n) is None), None)
        if bad is not None:
            return [], (
                f"no stored records: the index at {raw} lists {bad!r}, which is not a record name "
                "(<scenario>/<file>.json)"
            )
        paths = [_cached_record_path(folder, n) for n in names]
        for name, target in zip(names, paths):  # every call: a record the book re-ran replaces the cached copy
            content = fetch(f"{raw}/{name}")
            if not target.exists() or target.read_bytes() != content:
                atomic_write_bytes(target, content)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [], f"no stored records: {raw} could not be read ({type(err).__name__})"
    # Only the listed files: a record the book no longer lists may still lie in the cache.
    return read_records(paths, profile), f"the book's stored records, fetched from {raw}"


_RECORD_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,200}\.json$")


def _cached_record_path(folder: Path, name: object) -> Path | None:
    """Where the index entry `name` is cached, or None unless it is <scenario>/<file>.json inside `folder`."""
    if not isinstance(name, str) or name.count("/") != 1:
        return None
    scenario, file = name.split("/")
    if not SCENARIO_NAME.match(scenario) or not _RECORD_FILE.match(file) or file == INDEX:
        return None
    target = (folder / scenario / file).resolve()
    return target if folder in target.parents else None


def collect_records(profile: str, repository_url: str, **filters) -> tuple[list[RunRecord], list[str]]:
    """The reader's own records of `profile` combined with the book's stored ones (own runs replace
    stored runs with the same key), filtered like `load_records`; and a line per source."""
    own = load_records(profile, **filters)
    stored, where = stored_records(profile, repository_url)
    if (
        stored
        and results_dir(profile).resolve() == (book_root() or Path("/nonexistent")).resolve() / "results" / profile
    ):
        stored = []  # the reader's results folder is the book's own: nothing to add
    keys = {r.key for r in own}
    filtered = [r for r in stored if r.key not in keys and record_matches(r, **filters)]
    lines = [f"{len(own)} record(s) from your runs in {shown_path(results_dir(profile))}"]
    if filtered or not own:
        lines.append(f"{len(filtered)} record(s) from {where}")
    return own + filtered, lines
