"""Device options of the training loop: pinned batches for CUDA, torch.compile of the model, and
(where a GPU exists) frozen tensors staying bitwise identical on it. The CUDA test is skipped on a
machine without one."""

from __future__ import annotations

import pytest
import torch

import mtl_helpers.evaluation as evaluation_module
import mtl_helpers.train as train_module
from mtl_helpers import Trainer, TrainConfig, assert_frozen_unchanged, changed_groups, freeze, make_loader, snapshot

FAST = dict(batch_size=16, eval_batch_size=64, progress=False)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_make_loader_pins_only_when_asked():
    rows = [{"x": torch.tensor([i])} for i in range(4)]
    assert make_loader(rows, None, 2, False).pin_memory is False
    assert make_loader(rows, None, 2, False, pin_memory=True).pin_memory is True


def loader_calls(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = train_module.make_loader

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "make_loader", spy)  # training loaders
    monkeypatch.setattr(evaluation_module, "make_loader", spy)  # scoring loaders (score_rows)
    return calls


def test_trainer_pins_batches_only_on_cuda(make_model, tokenizer, trec, monkeypatch):
    calls = loader_calls(monkeypatch)
    trainer = Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(epochs=0.5, device="cpu", **FAST))
    assert trainer.pin_memory is False
    trainer.fit()
    trainer.evaluate()
    assert len(calls) == 2 and all(
        c["pin_memory"] is False for c in calls
    )  # one training loader, one evaluation loader


@needs_cuda
def test_on_cuda_frozen_tensors_stay_bitwise_identical_and_batches_are_pinned(
    make_model, tokenizer, trec, sst2, monkeypatch
):
    calls = loader_calls(monkeypatch)
    model = make_model([trec, sst2])
    freeze(model, "embeddings", "layer.0", "head.sst2")
    trainer = Trainer(
        model,
        tokenizer,
        [trec, sst2],
        TrainConfig(epochs=1, lr=1e-2, weight_decay=0.5, device="cuda", sync_every=4, precision="bf16", **FAST),
    )
    assert trainer.device.type == "cuda" and trainer.pin_memory
    before = snapshot(model)
    assert all(t.device.type == "cuda" for t in before.values())
    cpu_copy = {n: t.cpu() for n, t in before.items()}  # a CPU snapshot compares too: `before` moves to the parameter
    trainer.fit()
    assert calls and all(c["pin_memory"] is True for c in calls)
    assert_frozen_unchanged(model, before)
    assert_frozen_unchanged(model, cpu_copy)
    report = changed_groups(model, before)
    for group in ("embeddings", "layer.0", "head.sst2"):
        assert report.loc[group, "bitwise identical"], group
    assert not report.loc["layer.2", "bitwise identical"] and not report.loc["head.trec", "bitwise identical"]
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


COMPILE_RUN = """
import json, torch
from transformers import AutoTokenizer, BertConfig, BertModel
from mtl_helpers import MultiTaskModel, Trainer, TrainConfig, default_model_path, load_task

tokenizer = AutoTokenizer.from_pretrained(default_model_path())
trec = load_task("trec", max_train=96, max_eval=48)
out = {}
for compiled in (False, True):
    seen = {"compiled": None}  # written, never read, by the hook: no guard on it, so no recompiles
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0))
    model = MultiTaskModel.for_tasks(encoder, [trec], dropout=0.0)
    def note(module, inputs, output):
        seen["compiled"] = torch.compiler.is_compiling()
    model.heads["trec"].register_forward_hook(note)
    config = TrainConfig(epochs=0.5, lr=1e-3, compile=compiled, device="cpu", eval_every=None, batch_size=16,
                         eval_batch_size=64, progress=False)  # lengths vary
    trainer = Trainer(model, tokenizer, [trec], config)
    trainer.fit()
    losses = [s["loss"] for s in trainer.history.steps]
    out[str(compiled)] = {"losses": losses, "compiled_forward_ran": seen["compiled"]}
print(json.dumps(out))
"""


@pytest.mark.slow  # inductor builds C++ kernels on a CPU: 20-80 s
def test_compile_trains_like_eager_and_runs_the_compiled_forward(trec, tmp_path):
    """TrainConfig(compile=True) compiles the model in place; without dropout the run matches eager.
    It runs in a fresh interpreter with an inductor cache of its own: inside the test session, modules
    imported by other tests (distutils) broke inductor's C++ build, and a stale shared cache hid that."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run([sys.executable, "-c", COMPILE_RUN], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    eager, compiled = runs["False"], runs["True"]
    assert eager["compiled_forward_ran"] is False, "the eager run went through the compiler"
    assert compiled["compiled_forward_ran"] is True, "the compiled forward never ran"
    assert len(compiled["losses"]) == len(eager["losses"]) == 3
    assert compiled["losses"] == pytest.approx(eager["losses"], rel=1e-3, abs=1e-4)


def test_compile_must_be_a_bool():
    with pytest.raises(ValueError, match=r"compile='yes' \(allowed: True or False\)"):
        TrainConfig(compile="yes")
