"""The book's precision per machine (encoder.book_precision): bf16 autocast only where it is native."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_bert
from mtl_helpers import MTLError, Recipe, encoder, recipes
from mtl_helpers.profiles import PROFILES
from mtl_helpers.encoder import book_precision, cpu_has_native_bf16

CPU = torch.device("cpu")


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("flags : fpu avx2 avx512f avx512_bf16 ")
    assert cpu_has_native_bf16("flags : fpu avx2 amx_bf16 amx_tile")
    assert not cpu_has_native_bf16("flags : fpu avx2 avx512f avx512_vnni")


def test_the_cpu_gets_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.delenv("MTL_PRECISION", raising=False)
    monkeypatch.setattr(encoder, "cpu_has_native_bf16", lambda: True)
    assert book_precision(CPU) == "bf16"
    monkeypatch.setattr(encoder, "cpu_has_native_bf16", lambda: False)
    assert book_precision(CPU) == "fp32"


def test_the_environment_overrides_and_is_checked(monkeypatch):
    monkeypatch.setattr(encoder, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setenv("MTL_PRECISION", "bf16")
    assert book_precision(CPU) == "bf16"
    monkeypatch.setenv("MTL_PRECISION", "fp16")
    with pytest.raises(MTLError, match="MTL_PRECISION='fp16'"):
        book_precision(CPU)


def test_a_recipe_trains_in_the_machines_precision_and_its_spec_says_so(monkeypatch, tokenizer, trec):
    monkeypatch.delenv("MTL_PRECISION", raising=False)
    monkeypatch.setattr(recipes, "fresh_encoder", lambda recipe, seed: (tiny_bert(), tokenizer))
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(encoder, "cpu_has_native_bf16", lambda native=native: native)
        trainer = recipes.build_trainer(Recipe(train=("all",)), [trec], 0, PROFILES["smoke"], device="cpu")
        assert trainer.config.precision == expected
    explicit = recipes.build_trainer(Recipe(), [trec], 0, PROFILES["smoke"], device="cpu", precision="fp32")
    assert explicit.config.precision == "fp32"  # a caller's choice stands


def test_a_run_in_another_precision_is_not_reused(monkeypatch, tokenizer, trec, tmp_path):
    # the spec holds the precision: a bf16 run stored on one machine is retrained in fp32 on another
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(recipes, "fresh_encoder", lambda recipe, seed: (tiny_bert(), tokenizer))
    specs = []
    monkeypatch.setattr(recipes, "run_seeds", lambda *args, **kwargs: specs.append(args[4]) or [])
    for precision in ("bf16", "fp32"):
        monkeypatch.setenv("MTL_PRECISION", precision)
        recipes.run_recipe("arm", Recipe(), [trec], [0], PROFILES["smoke"])
    assert [s["precision"] for s in specs] == ["bf16", "fp32"]


def test_the_benchmark_and_the_book_name_the_same_native_bf16_flags():
    from bench.machine import NATIVE_BF16

    assert tuple(NATIVE_BF16) == encoder.NATIVE_BF16_FLAGS
