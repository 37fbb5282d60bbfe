"""Shared fixtures: offline settings, the real data, and tiny random encoders built from configs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: fail fast instead of retrying
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "MTL_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["MTL_DATA_DIR"] = str(_SHARED)

import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: E402

from mtl_helpers import MultiTaskModel, RunRecord, SentenceHead, default_model_path, get_profile, load_task  # noqa: E402
from mtl_helpers import recipes  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# Paths of a build machine that must never reach committed files or notebook outputs: Unix home
# and work folders, temporary files, and Windows user folders. Built from parts so that this
# file does not itself name such a path.
_ROOTS = "|".join(("work/", "root/", "home/[a-z]", "tmp/[A-Za-z0-9_]"))
MACHINE_PATH = re.compile(rf"(/(?:{_ROOTS})|[A-Z]:\\\\Users)")


def data_dir() -> Path:
    path = os.environ.get("MTL_DATA_DIR")
    if not path or not Path(path).is_dir():
        pytest.skip("the shared benchmark data is not available (set MTL_DATA_DIR)")
    return Path(path)


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="session")
def trec():
    data_dir()
    return load_task("trec", max_train=96, max_eval=48)


@pytest.fixture(scope="session")
def sst2():
    data_dir()
    return load_task("sst2", max_train=96, max_eval=48)


def tiny_bert(layers: int = 3, hidden: int = 32, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    return BertModel(config)


def tiny_model(tasks, layers: int = 3, seed: int = 0, **kwargs) -> MultiTaskModel:
    """A randomly initialised small BERT with one head per task (no download, milliseconds)."""
    encoder = tiny_bert(layers, seed=seed)
    torch.manual_seed(seed)
    return MultiTaskModel.for_tasks(encoder, tasks, **kwargs)


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def two_heads():
    """A tiny model with heads 'a' (3 classes) and 'b' (2 classes), for tests without data."""
    torch.manual_seed(0)
    return MultiTaskModel(tiny_bert(), {"a": SentenceHead(32, 3), "b": SentenceHead(32, 2)})


def sample_record(
    scenario="head-only", tasks=("trec", "sst2"), model="m", profile="cpu", seed=0, acc=0.5, **kw
) -> RunRecord:
    """A small sentence-task record (four validation outcomes per task), for tests of record files."""
    return RunRecord(
        scenario=scenario,
        profile=profile,
        seed=seed,
        model=model,
        tasks={t: {"level": "sentence", "metric": "accuracy", "sizes": {"validation": 4}} for t in tasks},
        metrics={"validation": {t: {"accuracy": acc} for t in tasks}},
        outcomes={"validation": {t: "1010" for t in tasks}},
        **kw,
    )


@pytest.fixture
def tiny_recipes(monkeypatch, tmp_path, tokenizer):
    """run_recipe on a tiny random encoder, with records in a scratch folder (the smoke profile)."""
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("MTL_PROFILE", raising=False)
    monkeypatch.setattr(recipes, "fresh_encoder", lambda recipe, seed: (tiny_bert(seed=seed), tokenizer))
    return get_profile("smoke")
