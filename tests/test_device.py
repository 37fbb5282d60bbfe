"""Device options of the training loop: pinned batches for CUDA, torch.compile of the model, and
(where a GPU exists) frozen tensors staying bitwise identical on it. The CUDA test is skipped on a
machine without one."""
from __future__ import annotations

import pytest
import torch

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

    monkeypatch.setattr(train_module, "make_loader", spy)
    return calls


def test_trainer_pins_batches_only_on_cuda(make_model, tokenizer, trec, monkeypatch):
    calls = loader_calls(monkeypatch)
    trainer = Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(epochs=0.5, device="cpu", **FAST))
    assert trainer.pin_memory is False
    trainer.fit()
    trainer.evaluate()
    assert len(calls) == 2 and all(c["pin_memory"] is False for c in calls)  # one training loader, one evaluation loader


@needs_cuda
def test_on_cuda_frozen_tensors_stay_bitwise_identical_and_batches_are_pinned(make_model, tokenizer, trec, sst2, monkeypatch):
    calls = loader_calls(monkeypatch)
    model = make_model([trec, sst2])
    freeze(model, "embeddings", "layer.0", "head.sst2")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-2, weight_decay=0.5, device="cuda",
                                                                  sync_every=4, precision="bf16", **FAST))
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


@pytest.fixture
def inductor(tmp_path, monkeypatch):
    """A fresh inductor cache for this test alone (a stale shared one in the temp folder broke a CI run),
    and a skip naming the reason where inductor cannot build any C++ kernel on this machine at all."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as error:  # the machine's toolchain, not the package: nothing of ours ran yet
        pytest.skip(f"torch.compile cannot build a trivial CPU kernel here: {type(error).__name__}: {str(error)[:200]}")
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # inductor builds C++ kernels on a CPU: 20-80 s
def test_compile_trains_like_eager_and_runs_the_compiled_forward(tokenizer, trec, inductor):
    """TrainConfig(compile=True) compiles the model in place; without dropout the run matches eager."""
    from transformers import BertConfig, BertModel

    from mtl_helpers import MultiTaskModel

    losses = {}
    for compiled in (False, True):
        seen = {"compiled": None}  # written, never read, by the hook: no guard on it, so no recompiles
        torch.manual_seed(0)
        encoder = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0))
        model = MultiTaskModel.for_tasks(encoder, [trec], dropout=0.0)
        model.heads["trec"].register_forward_hook(lambda m, i, o: seen.__setitem__("compiled", torch.compiler.is_compiling()))
        config = TrainConfig(epochs=0.5, lr=1e-3, compile=compiled, device="cpu", eval_every=None, **FAST)  # lengths vary
        trainer = Trainer(model, tokenizer, [trec], config)
        trainer.fit()
        losses[compiled] = [s["loss"] for s in trainer.history.steps]
        assert seen["compiled"] is compiled, "the compiled forward ran" if not compiled else "the compiled forward never ran"
    assert len(losses[True]) == len(losses[False]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-4)


def test_compile_must_be_a_bool():
    with pytest.raises(ValueError, match=r"compile='yes' \(allowed: True or False\)"):
        TrainConfig(compile="yes")
