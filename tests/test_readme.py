"""A new user follows the README: its quickstart block runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make book", "make test"]


@pytest.mark.slow
def test_quickstart_runs(capsys):
    block = re.search(
        r"<!-- tests/test_readme.py runs this block -->\n```python\n(.*?)```", README.read_text(), re.S
    ).group(1)
    namespace: dict = {}
    exec(compile(block, "README quickstart", "exec"), namespace)
    trainer = namespace["trainer"]
    final = trainer.history.final("validation")
    assert set(final) == {"trec", "sst2"} and trainer.global_step > 0
    assert "frozen" in capsys.readouterr().out
