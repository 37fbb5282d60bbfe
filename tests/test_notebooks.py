"""The notebooks: stored clean (no errors, no machine paths, a parameters cell), a parameter check that
refuses what the chapter cannot use, and ready for `make nbval`, which runs each one once, in the smoke
profile, from a copy that papermill prepared (the unit tests here execute no notebook)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

from conftest import MACHINE_PATH

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def outputs_text(nb) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


def load_runner():
    """scripts/run_notebooks.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_eleven_chapters():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 12)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_short_commented_and_overridable(path):
    """A Colab reader edits the parameters cell: plain literals, a comment on the profile and seeds."""
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    lines = [line for line in cell.source.splitlines() if line.strip()]
    assert lines[0].startswith('profile = "cpu"') and "#" in lines[0]
    assert len(lines) <= 12, "keep the parameters cell short"
    if path.stem not in ("01_model_tour", "10_comparison"):
        assert any(line.startswith("seeds = None") for line in lines), "every seeded chapter takes a seeds parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    text = outputs_text(nb)
    assert '"output_type": "error"' not in text, "stored notebook holds an error output"
    assert not MACHINE_PATH.search(json.dumps(nb)), MACHINE_PATH.search(json.dumps(nb)).group(0)
    assert "Loading weights" not in text and "it/s]" not in text, "progress-bar noise in outputs"
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and 'profile = "cpu"' in parameters[0].source
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 1, "every chapter shows at least one figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_injected_parameters_cell(path):
    """papermill's injected cell would run after `parameters` and undo a Colab reader's edits."""
    nb = nbformat.read(path, as_version=4)
    injected = [i for i, c in enumerate(nb.cells) if "injected-parameters" in c.metadata.get("tags", [])]
    assert not injected, (
        f"cells {injected} are papermill's injected parameters: python scripts/run_notebooks.py --strip-only"
    )


def test_runner_strips_injected_parameters_and_progress_bars(tmp_path):
    runner = load_runner()
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('profile = "cpu"', metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell(
        '# Parameters\nprofile = "smoke"\n', metadata={"tags": ["injected-parameters"]}
    )
    work = nbformat.v4.new_code_cell("train()")
    work.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="epoch 1:  40%|####  | 40/100 [00:02<00:03, 9.9it/s]\r"),
        nbformat.v4.new_output("stream", name="stdout", text="done\n"),
    ]
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nsummary()")
    nb.cells = [parameters, injected, work, checked]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    changed = runner.clean_notebook(path)
    assert changed == {
        "progress-bar outputs removed": 1,
        "injected-parameters cells removed": 1,
        "NBVAL comments made tags": 1,
    }
    cleaned = nbformat.read(path, as_version=4)
    assert [c.source for c in cleaned.cells] == [parameters.source, work.source, "summary()"]
    assert [o.get("text") for o in cleaned.cells[1].outputs] == ["done\n"]
    assert cleaned.cells[2].metadata["tags"] == ["nbval-check-output"]
    assert not any(runner.clean_notebook(path).values())


def test_nbval_markers_are_tags_not_comments():
    """`# NBVAL_CHECK_OUTPUT` would show on the page; nbval reads the cell tag just the same."""
    import nbval.plugin

    tagged = 0
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            assert "NBVAL" not in cell.source, f"{path.name} cell {i}: python scripts/run_notebooks.py --strip-only"
            tags = [t for t in cell.metadata.get("tags", []) if t.startswith("nbval")]
            assert all(t in nbval.plugin.metadata_tags for t in tags), f"{path.name} cell {i}: unknown nbval tag {tags}"
            tagged += "nbval-check-output" in tags
    assert tagged >= 1, "no cell carries the nbval-check-output tag: `make nbval` would compare nothing"


def test_papermill_prepares_every_notebook_for_nbval(tmp_path, monkeypatch):
    """`make nbval` runs each notebook once: papermill injects the profile without running anything, nbval
    executes the copy. The copy must hold the injected cell right after `parameters`, and every stored
    output and tag unchanged, or nbval's check of the cells tagged nbval-check-output would compare nothing."""
    runner = load_runner()
    monkeypatch.chdir(ROOT)  # the runner reads notebooks/ relative to the checkout, as after its own chdir
    prepared = runner.prepare_notebooks([p.name for p in NOTEBOOKS], tmp_path, {"profile": "smoke"})
    assert [p.name for p in prepared] == [p.name for p in NOTEBOOKS]
    for source, copy in zip(NOTEBOOKS, prepared):
        stored, ready = nbformat.read(source, as_version=4).cells, nbformat.read(copy, as_version=4).cells
        at = next(i for i, c in enumerate(stored) if "parameters" in c.metadata.get("tags", []))
        injected = ready.pop(at + 1)
        assert "injected-parameters" in injected.metadata["tags"], source.name
        assert injected.source == '# Parameters\nprofile = "smoke"\n', source.name
        assert [c.source for c in ready] == [c.source for c in stored], source.name
        assert [c.get("outputs") for c in ready] == [c.get("outputs") for c in stored], source.name
        assert [c.metadata.get("tags") for c in ready] == [c.metadata.get("tags") for c in stored], source.name
        checked = [c for c in ready if "nbval-check-output" in c.metadata.get("tags", [])]
        assert all(c.outputs for c in checked), f"{source.name}: a checked cell lost its stored output"


def test_make_nbval_executes_the_prepared_copies():
    """nbval runs the copies that papermill prepared (with the smoke profile injected), not notebooks/."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nnbval:") :].split("\n\n")[0]
    prepare = next(line for line in recipe.splitlines() if "run_notebooks.py" in line)
    assert "--profile smoke --prepare-only --out $(NBVAL_DIR)" in prepare
    run = recipe[recipe.index("--nbval-lax") :]
    assert run.rstrip().endswith("$(addprefix $(NBVAL_DIR)/,$(notdir $(NBVAL_NOTEBOOKS)))"), run


# One value per chapter that its parameter check must refuse: a constraint the chapter relies on later.
REFUSED = {
    "01_model_tour": ({"task_b": "conll2003"}, "task_b='conll2003' is a token-level task; this chapter needs"),
    "02_whole_network_frozen": ({"task_a": "wnut_17"}, "task_a='wnut_17' is a token-level task"),
    "03_backbone_frozen": ({"task_b": "conll2003"}, "task_b='conll2003' is a token-level task"),
    "04_one_head_frozen": ({"task_b": "trec"}, "task_a and task_b must be two different tasks"),
    "05_little_data": (
        {"task_b": "conll2003"},
        "task_b='conll2003' is a token-level task; this chapter needs a "
        "sentence-level task (its head-only probe caches sentence features)",
    ),
    "06_gradual_unfreezing": ({"task_b": "trec"}, "task_a and task_b must be two different tasks"),
    "07_heads_first_and_top_layers": ({"task_b": "conll2003"}, "task_b='conll2003' is a token-level task"),
    "08_when_transfer_pays": ({"task_a": "wnut_17"}, "task_a='wnut_17' is a token-level task"),
    "09_ner_beside_a_sentence_task": ({"ner_task": "sst2"}, "ner_task='sst2' is a sentence-level task"),
    "10_comparison": ({"task_b": "trec"}, "task_a and task_b must be two different tasks"),
    "11_adapters": ({"task_b": "conll2003"}, "task_b='conll2003' is a token-level task"),
}


def test_every_chapter_has_a_refused_parameter():
    assert sorted(REFUSED) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_parameter_check_refuses_what_the_chapter_cannot_use(path, monkeypatch):
    """The cell after `parameters` refuses a value that would fail many cells later (chapter 5 with a token
    task failed at its ninth cell, asking for a setting the reader cannot change): the chapter's imports,
    its parameters with one changed, then that cell, run here without a kernel."""
    from mtl_helpers import ParameterError

    monkeypatch.delenv("MTL_PROFILE", raising=False)
    cells = nbformat.read(path, as_version=4).cells
    imports = next(c for c in cells if "hide-input" in c.metadata.get("tags", []))
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    changed, message = REFUSED[path.stem]
    namespace = {}
    exec("\n".join(line for line in imports.source.splitlines() if not line.startswith("%")), namespace)
    exec(cells[at].source, namespace)
    namespace.update(changed, profile="smoke")
    with pytest.raises(ParameterError) as caught:
        exec(cells[at + 1].source, namespace)
    assert message in str(caught.value)


GLUE_ROLE = __import__("re").compile(r"\{glue(?::[a-z]+)?\}`([^`]+)`|```\{glue(?::[a-z]+)?\}\s+(\S+)")


def glued_keys(nb) -> set[str]:
    """The keys a stored notebook glued (myst-nb marks each glued output with `scrapbook.name`)."""
    return {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in nb.cells for o in c.get("outputs", [])} - {
        None
    }


def test_every_glue_reference_resolves_to_a_stored_output():
    """A reference to a key no notebook glued renders as a warning and an empty gap in a sentence:
    every {glue} role of the pages and of the notebooks' own prose must name a stored key."""
    stored = {p.name: glued_keys(nbformat.read(p, as_version=4)) for p in NOTEBOOKS}
    sources = [(p, nbformat.read(p, as_version=4)) for p in NOTEBOOKS]
    texts = [(p, "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")) for p, nb in sources]
    texts += [(p, p.read_text(encoding="utf8")) for p in sorted((ROOT / "book").glob("*.md"))]
    missing = []
    for path, text in texts:
        for match in GLUE_ROLE.finditer(text):
            reference = match.group(1) or match.group(2)
            notebook, rest = reference.split("::", 1) if "::" in reference else (path.name, reference)
            notebook, key = Path(notebook).name, rest.split(":")[0]
            if "::" in reference and ":" not in rest and match.group(1):
                missing.append(f"{path.name}: {reference} needs a format (myst-nb splits at the last colon: add ':s')")
            if key not in stored.get(notebook, set()):
                missing.append(f"{path.name}: {notebook}::{key}")
    assert not missing, "glue references with no stored output (run `make notebooks`): " + ", ".join(
        sorted(set(missing))
    )


# The page shows a code cell unless a tag removes its source; hide-input/hide-cell only fold it away.
SHOWN_LINE_LIMIT = 88
REMOVES_SOURCE = {"remove-cell", "remove_cell", "remove-input", "remove_input"}


def long_shown_lines(nb, limit: int = SHOWN_LINE_LIMIT) -> list[tuple[int, int, int]]:
    """(cell index from 0, line number from 1, length) of every shown code line longer than `limit` characters."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or REMOVES_SOURCE & set(cell.metadata.get("tags", [])):
            continue
        found += [
            (index, number, len(line)) for number, line in enumerate(cell.source.splitlines(), 1) if len(line) > limit
        ]
    return found


def test_long_shown_lines_skips_only_removed_sources():
    long = "x = " + "1" * (SHOWN_LINE_LIMIT - 3)
    fits = "y = " + "2" * (SHOWN_LINE_LIMIT - 4)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"{fits}\n{long}"),
        nbformat.v4.new_code_cell(long, metadata={"tags": ["hide-input"]}),
        nbformat.v4.new_code_cell(long, metadata={"tags": ["remove-cell"]}),
        nbformat.v4.new_code_cell(long, metadata={"tags": ["remove-input"]}),
        nbformat.v4.new_markdown_cell(long),
    ]
    assert long_shown_lines(nb) == [(0, 2, SHOWN_LINE_LIMIT + 1), (1, 1, SHOWN_LINE_LIMIT + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shown_code_lines_fit_the_page(path):
    """A shown code line over 88 characters scrolls sideways in the page's code cell at 1280 px."""
    found = long_shown_lines(nbformat.read(path, as_version=4))
    where = ", ".join(f"cell {cell} line {line} ({length} chars)" for cell, line, length in found)
    assert not found, f"{path.name}: shown code lines over {SHOWN_LINE_LIMIT} characters, break them: {where}"


MAX_SHOWN_DEFINITIONS = 20  # the book's budget: helpers live in the package, pages keep what they teach
DEFINITION = re.compile(r"^\s*def (\w+)\(", re.M)


def definitions(nb, shown_only: bool) -> list[str]:
    """Names of the functions a notebook's code cells define (only in shown cells, or in all)."""
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code" and not (shown_only and REMOVES_SOURCE & set(cell.metadata.get("tags", []))):
            names += DEFINITION.findall(cell.source)
    return names


def test_pages_show_few_function_definitions_and_copy_none_between_chapters():
    notebooks = {p.stem: nbformat.read(p, as_version=4) for p in NOTEBOOKS}
    shown = {name: definitions(nb, shown_only=True) for name, nb in notebooks.items()}
    total = sum(len(names) for names in shown.values())
    assert total <= MAX_SHOWN_DEFINITIONS, f"{total} functions defined in shown cells (at most 20): {shown}"
    owners: dict[str, list[str]] = {}
    for name, nb in notebooks.items():
        for function in set(definitions(nb, shown_only=False)):
            owners.setdefault(function, []).append(name)
    copied = {function: chapters for function, chapters in owners.items() if len(chapters) > 1}
    assert not copied, f"functions defined in more than one chapter (move them to the package): {copied}"


def test_the_definition_count_sees_shown_and_hidden_cells():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("def shown():\n    pass"),
        nbformat.v4.new_code_cell("def folded():\n    pass", metadata={"tags": ["hide-input"]}),
        nbformat.v4.new_code_cell("def hidden():\n    pass", metadata={"tags": ["remove-cell"]}),
    ]
    assert definitions(nb, shown_only=True) == ["shown", "folded"]
    assert definitions(nb, shown_only=False) == ["shown", "folded", "hidden"]


def test_the_comparison_chapter_runs_after_every_other_chapter():
    """It reads every chapter's records: a fresh run must make them all first, chapter 11's included."""
    order = load_runner().run_order(["11_adapters.ipynb", "10_comparison.ipynb", "02_x.ipynb", "01_y.ipynb"])
    assert order == ["01_y.ipynb", "02_x.ipynb", "11_adapters.ipynb", "10_comparison.ipynb"]
