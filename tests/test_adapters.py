"""Adapters: LoRA (through peft) on the layers each architecture names, one adapter or one per task,
merged back; BitFit; and the package's promises on an adapted encoder: groups, freezing, the dropout
rule, audits of what moved, rates, the optimizer, records, recipes, and the memory table."""

from __future__ import annotations

import types

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import (
    AutoModel,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    MPNetConfig,
    RobertaConfig,
)

from conftest import tiny_bert
from mtl_helpers import (
    MTLError,
    MultiTaskModel,
    SentenceHead,
    Trainer,
    TrainConfig,
    add_lora,
    add_task_adapters,
    assert_frozen_unchanged,
    audit_optimizer,
    bitfit,
    changed_groups,
    freeze,
    layer_groups,
    lora_targets,
    memory_facts,
    memory_table,
    merge_lora,
    recipes,
    snapshot,
    trainable_summary,
    unfreeze,
    use_adapter,
)
from mtl_helpers.batches import make_loader, to_device
from mtl_helpers.groups import group_aliases, transformer_blocks
from mtl_helpers.training_modes import dropout_in_training
from mtl_helpers.recipes import Recipe, run_recipe

# peft asks transformers 5 about gradient checkpointing through a deprecated name (add_lora silences it too)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
FAST = dict(batch_size=16, eval_batch_size=64, progress=False, eval_every=None)
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99)
CONFIGS = {
    "bert": lambda: BertConfig(**SMALL),
    "distilbert": lambda: DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, vocab_size=99),
    "roberta": lambda: RobertaConfig(**SMALL, pad_token_id=1, max_position_embeddings=64),
    "deberta-v2": lambda: DebertaV2Config(**SMALL),
    # relative attention without shared keys adds the position projections, which "all-linear" covers
    "deberta-v2-relative": lambda: DebertaV2Config(
        **SMALL, relative_attention=True, pos_att_type=["c2p", "p2c"], share_att_key=False, max_relative_positions=16
    ),
    "mpnet": lambda: MPNetConfig(**SMALL),
}
ATTENTION = {
    "bert": ("query", "key", "value"),
    "distilbert": ("q_lin", "k_lin", "v_lin"),
    "roberta": ("query", "key", "value"),
    "deberta-v2": ("query_proj", "key_proj", "value_proj"),
    "deberta-v2-relative": ("query_proj", "key_proj", "value_proj"),
    "mpnet": ("q", "k", "v"),
}
PER_LAYER = {"attention": 3, "all-linear": 6}  # deberta-v2-relative: 8, its two position projections


def lora_layer_names(model: nn.Module) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@pytest.mark.parametrize("scope", ["attention", "all-linear"])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_lora_targets_reach_exactly_the_intended_layers_of_each_architecture(kind, scope):
    torch.manual_seed(0)
    encoder = AutoModel.from_config(CONFIGS[kind]())
    list_path, blocks = transformer_blocks(encoder)
    in_blocks = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear) and n.startswith(list_path + ".")]
    wanted = set(in_blocks) if scope == "all-linear" else {n for n in in_blocks if n.split(".")[-1] in ATTENTION[kind]}
    per_layer = PER_LAYER[scope] + (2 if kind == "deberta-v2-relative" and scope == "all-linear" else 0)
    wrapped = get_peft_model(encoder, LoraConfig(r=2, lora_alpha=4, target_modules=lora_targets(encoder, scope)))
    targeted = lora_layer_names(wrapped)
    assert len(targeted) == per_layer * len(blocks)
    assert targeted == wanted
    assert not any("pooler" in n or "embeddings" in n for n in targeted)


def test_an_unknown_architecture_names_its_model_type_and_the_argument_to_set():
    stranger = types.SimpleNamespace(config=types.SimpleNamespace(model_type="funnel"))
    with pytest.raises(MTLError, match=r"'funnel'.*target_modules="):
        lora_targets(stranger)
    with pytest.raises(MTLError, match="scope"):
        lora_targets(tiny_bert(), "everything")


def two_tasks(layers: int = 3) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(tiny_bert(layers), {"trec": SentenceHead(32, 6), "sst2": SentenceHead(32, 2)})


def sample_batch(rows: int = 4, length: int = 7) -> dict:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (rows, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# ---------------------------------------------------------------- groups and freezing


def test_adapters_form_their_own_groups_and_every_pretrained_weight_is_frozen():
    model = add_lora(two_tasks(), rank=4, alpha=8, scope="all-linear", layers=2)
    groups = layer_groups(model)
    assert list(groups) == [
        "embeddings",
        "layer.0",
        "layer.1",
        "lora.layer.1",
        "layer.2",
        "lora.layer.2",
        "head.trec",
        "head.sst2",
    ]
    for i in (1, 2):
        adapter, base = groups[f"lora.layer.{i}"], groups[f"layer.{i}"]
        assert (adapter.role, adapter.depth) == ("adapter", base.depth)
        assert all(".lora_" in n and f".layer.{i}." in n for n, _ in adapter.params)
        assert len(adapter.params) == 6 * 2  # A and B of six linear layers
        assert adapter.trainable == adapter.numel and base.trainable == 0
        assert any(n.endswith("query.base_layer.weight") for n, _ in base.params)  # peft's name for the base weight
    ids = [id(p) for g in groups.values() for _, p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for g in groups.values() if g.role in ("adapter", "head") for n, _ in g.params}
    states = trainable_summary(model)["state"]
    assert states.to_dict() == {n: "trainable" if groups[n].role in ("adapter", "head") else "frozen" for n in groups}
    out = model.encoder(**sample_batch())
    assert out.last_hidden_state.shape == (4, 7, 32)  # the wrapped encoder is called as before
    assert model("trec", sample_batch()).shape == (4, 6)


def test_adapter_groups_freeze_unfreeze_and_have_aliases():
    model = add_task_adapters(two_tasks(2), rank=2, alpha=4)
    aliases = group_aliases(model)
    assert aliases["adapters"] == ["lora.trec.layer.0", "lora.sst2.layer.0", "lora.trec.layer.1", "lora.sst2.layer.1"]
    assert aliases["lora.trec"] == ["lora.trec.layer.0", "lora.trec.layer.1"]
    first_a = {n.replace(".trec.", "."): p for n, p in model.named_parameters() if ".lora_A.trec." in n}
    second_a = {n.replace(".sst2.", "."): p for n, p in model.named_parameters() if ".lora_A.sst2." in n}
    assert first_a.keys() == second_a.keys() and not any(torch.equal(first_a[n], second_a[n]) for n in first_a)
    assert freeze(model, "lora.trec") == aliases["lora.trec"]
    assert trainable_summary(model).loc["lora.trec.layer.1", "state"] == "frozen"
    assert trainable_summary(model).loc["lora.sst2.layer.1", "state"] == "trainable"
    unfreeze(model, "adapters")
    assert all(layer_groups(model)[n].trainable for n in aliases["adapters"])
    with pytest.raises(MTLError, match="already has an adapter"):
        add_lora(model, 2, 4, adapter_name="trec")
    with pytest.raises(MTLError, match="Adapter name"):
        add_lora(model, 2, 4, adapter_name="a.b")
    with pytest.raises(MTLError, match="rank"):
        add_lora(two_tasks(), 0, 4)
    with pytest.raises(MTLError, match="only 3 transformer layers"):
        add_lora(two_tasks(), 2, 4, layers=4)


def test_frozen_base_layers_run_without_dropout_while_the_adapters_own_dropout_runs():
    model = add_lora(two_tasks(), rank=4, alpha=8, dropout=0.1).train()
    dropouts = {n: m for n, m in model.encoder.named_modules() if isinstance(m, nn.Dropout)}
    lora = {n for n in dropouts if ".lora_dropout." in n}
    assert len(lora) == 3 * 3  # query, key and value of three layers
    assert all(dropouts[n].training for n in lora)
    assert not any(m.training for n, m in dropouts.items() if n not in lora)  # every frozen base dropout is off
    assert all(m.training for m in model.heads.modules())
    assert any(not m.training for m in model.encoder.modules())
    state = dropout_in_training(model)
    assert state["lora.layer.0"] == "on" and state["layer.0"] == "off" and state["embeddings"] == "off"
    freeze(model, "adapters")  # a frozen adapter's dropout stops too
    assert not any(dropouts[n].training for n in lora)
    # without LoRA dropout, the frozen encoder computes the same in train and eval mode
    plain = add_lora(two_tasks(), rank=4, alpha=8)
    with torch.no_grad():
        trained = plain.train().embed(sample_batch())
        evaluated = plain.eval().embed(sample_batch())
    assert torch.equal(trained, evaluated)


# ---------------------------------------------------------------- training


def lora_trainer(make_model, tokenizer, tasks, **config):
    model = add_lora(make_model(tasks), rank=4, alpha=8, scope="all-linear")
    return Trainer(model, tokenizer, tasks, TrainConfig(lr=1e-2, factor=2.0, **FAST, **config))


def test_training_lora_moves_only_adapters_and_heads_and_the_record_counts_them(make_model, tokenizer, trec):
    trainer = lora_trainer(make_model, tokenizer, [trec])
    model = trainer.model
    rates = trainer.rates
    for i in range(3):  # the adapter in layer i learns at layer i's rate
        assert rates[f"lora.layer.{i}"] == rates[f"layer.{i}"] == pytest.approx(1e-2 / 2.0 ** (2 - i))
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    audit_optimizer(model, trainer.optimizer)
    before = snapshot(model)
    trainer.fit(0.5)
    moved = changed_groups(model, before)
    adapters = [n for n, g in layer_groups(model).items() if g.is_adapter]
    assert not moved.loc[adapters + ["head.trec"], "bitwise identical"].any()
    assert moved.drop(adapters + ["head.trec"])["bitwise identical"].all()  # every base weight, bitwise
    assert_frozen_unchanged(model, before)
    record = trainer.result("lora-test", "smoke", splits=("validation",))
    expected = sum(g.numel for n, g in layer_groups(model).items() if g.is_adapter or g.is_head)
    assert record.trainable_params == expected == memory_facts(model)["trainable_params"]
    assert set(record.trained) == {*adapters, "head.trec"}


def test_training_one_task_leaves_the_other_tasks_adapter_and_predictions_bitwise_unchanged(
    make_model, tokenizer, trec, sst2
):
    model = add_task_adapters(make_model([trec, sst2]), rank=4, alpha=8)
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-2, **FAST))
    trainer.fit(1.0)  # both adapters move off their zero B first, so trec's predictions depend on its adapter
    batch = to_device(next(iter(trainer._loader("trec", "validation", shuffle=False))), trainer.device)
    model.eval()
    with torch.no_grad():
        before_logits = model("trec", batch)
    before = snapshot(model)
    trainer.fit(0.5, tasks=["sst2"])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model("trec", batch), before_logits)
    moved = changed_groups(model, before)
    trec_adapter = group_aliases(model)["lora.trec"]
    sst2_adapter = group_aliases(model)["lora.sst2"]
    assert moved.loc[trec_adapter + ["head.trec"], "bitwise identical"].all()
    assert not moved.loc[sst2_adapter, "bitwise identical"].any()
    assert all(g.trainable for g in layer_groups(model).values() if g.is_adapter)  # switching left the flags alone
    assert set(trainer.trained_groups) >= {*trec_adapter, *sst2_adapter}
    facts = memory_facts(model)
    own = sum(layer_groups(model)[n].numel for n in trec_adapter) + layer_groups(model)["head.trec"].numel
    assert facts["task_bytes"]["trec"] == 4 * own  # its own adapter and head, float32


def test_a_merged_adapter_computes_what_the_unmerged_one_did(make_model, tokenizer, trec, sst2):
    trainer = lora_trainer(make_model, tokenizer, [trec])
    trainer.fit(0.5)
    model = trainer.model.eval()
    batch = sample_batch(8, 12)
    with torch.no_grad():
        unmerged = model("trec", batch)
        merged_model = merge_lora(model).eval()
        merged = merged_model("trec", batch)
    assert type(merged_model.encoder).__name__ == "BertModel"
    assert not any("lora" in n for n, _ in merged_model.named_parameters())
    assert torch.allclose(merged, unmerged, atol=1e-5, rtol=0)
    assert any("lora" in n for n, _ in model.named_parameters())  # a copy: the adapted model is kept
    several = add_task_adapters(two_tasks(), rank=2, alpha=4)
    with pytest.raises(MTLError, match="adapter_name"):
        merge_lora(several)
    with torch.no_grad():
        for adapter in ("trec", "sst2"):
            for module in several.encoder.modules():
                if isinstance(module, LoraLayer):
                    nn.init.normal_(module.lora_B[adapter].weight)
        expected = several.eval()("sst2", batch)
        assert torch.allclose(merge_lora(several, "sst2").eval()("sst2", batch), expected, atol=1e-5, rtol=0)
        use_adapter(several, "trec")
        assert not torch.equal(several.embed(batch), merge_lora(several, "sst2").embed(batch))


def test_bitfit_trains_the_biases_and_nothing_else_of_the_encoder(make_model, tokenizer, trec):
    model = bitfit(make_model([trec]))
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.encoder.named_parameters() if n.endswith(".bias")}
    assert "encoder.layer.0.output.LayerNorm.bias" in trainable  # all bias terms, as in the paper
    assert "encoder.layer.0.output.LayerNorm.weight" not in trainable
    assert all(p.requires_grad for p in model.heads.parameters())
    assert set(trainable_summary(model)["state"]) == {"partial", "trainable"}
    without_norm = bitfit(make_model([trec]), layer_norm=False)
    assert not any(p.requires_grad for n, p in without_norm.encoder.named_parameters() if "LayerNorm" in n)
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(lr=1e-2, **FAST))
    before = snapshot(model)
    trainer.fit(0.25)
    after = dict(model.encoder.named_parameters())
    assert all(torch.equal(after[n], before[f"encoder.{n}"]) for n in after if n not in trainable)
    assert not all(torch.equal(after[n], before[f"encoder.{n}"]) for n in trainable)


# ---------------------------------------------------------------- memory


def test_the_memory_table_counts_trainable_parameters_their_optimizer_state_and_per_task_bytes():
    full, lora, fit = two_tasks(), add_lora(two_tasks(), rank=4, alpha=8), bitfit(two_tasks())
    table = memory_table({"full": full, "lora": lora, "bitfit": fit})
    facts = memory_facts(lora)
    adapters = sum(g.numel for g in layer_groups(lora).values() if g.is_adapter)
    heads = sum(p.numel() for p in lora.heads.parameters())
    assert facts["trainable_params"] == adapters + heads == 3 * 3 * 2 * 4 * 32 + heads
    assert facts["optimizer_state_bytes"] == 2 * 4 * facts["trainable_params"]  # AdamW: two float32 per parameter
    assert facts["task_bytes"]["trec"] == 4 * (adapters + 32 * 6 + 6)  # the shared adapter and its own head
    assert facts["whole_model_bytes"] == memory_facts(full)["whole_model_bytes"]
    assert table.loc["full", "trainable params"] == sum(p.numel() for p in full.parameters())
    assert table["trainable params"].idxmin() == "bitfit"
    assert table.loc["lora", "whole model / per task"] > 100 > table.loc["full", "whole model / per task"]


# ---------------------------------------------------------------- recipes


OLD_FIELDS = {
    "train",
    "head_lr",
    "backbone_lr",
    "factor",
    "epochs",
    "batch_size",
    "schedule",
    "cache_features",
    "lp_epochs",
    "gradual",
    "stage_scales",
    "eval_every",
    "eval_train",
    "model_name",
    "n_layers",
    "pretrained",
    "extra",
}


def test_recipe_adapter_fields_stay_out_of_the_spec_unless_set(trec):
    assert set(Recipe().spec([trec])["recipe"]) == OLD_FIELDS  # stored fingerprints do not change
    lora = Recipe(train=("heads",), adapter="lora")
    assert (lora.lora_rank, lora.lora_alpha, lora.lora_scope, lora.lora_dropout) == (8, 16, "attention", 0.0)
    spec = lora.spec([trec])["recipe"]
    assert set(spec) - OLD_FIELDS == {"adapter", "lora_rank", "lora_alpha", "lora_scope", "lora_dropout"}
    assert set(Recipe(train=("heads",), adapter="bitfit").spec([trec])["recipe"]) - OLD_FIELDS == {"adapter"}


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(lora_rank=8), "need adapter='lora'"),
        (dict(adapter="bitfit", train=("heads",), lora_layers=2), "need adapter='lora'"),
        (dict(adapter="lora"), r"train must be \('heads',\)"),
        (dict(adapter="lora", train=("heads",), gradual=3), "gradual"),
        (dict(adapter="lora", train=("heads",), lp_epochs=0.5), "lp_epochs"),
        (dict(adapter="bitfit", train=("heads",), cache_features=True), "cache_features"),
        (dict(adapter="lora", train=("heads",), lora_rank=0), "rank"),
        (dict(adapter="lora", train=("heads",), lora_scope="mlp"), "scope"),
        (dict(adapter="ia3", train=("heads",)), "adapter is None, 'lora' or 'bitfit'"),
    ],
)
def test_recipe_refuses_contradicting_adapter_settings(settings, message):
    with pytest.raises(MTLError, match=message):
        Recipe(**settings)


@pytest.mark.parametrize(
    "settings, trained",
    [
        (dict(adapter="lora", lora_rank=4, lora_layers=2), {"lora.layer.1", "lora.layer.2"}),
        (
            dict(adapter="lora", lora_rank=2, lora_per_task=True),
            {f"lora.{t}.layer.{i}" for t in ("trec", "sst2") for i in range(3)},
        ),
        (dict(adapter="bitfit"), {"embeddings", "layer.0", "layer.1", "layer.2"}),
    ],
)
def test_run_recipe_trains_an_adapter_arm(tiny_recipes, trec, sst2, settings, trained):
    recipe = Recipe(train=("heads",), head_lr=1e-2, backbone_lr=1e-3, epochs=0.5, batch_size=16, **settings)
    [record] = run_recipe("adapter-arm", recipe, [trec, sst2], [0], tiny_recipes, log=None)
    assert set(record.trained) == trained | {"head.trec", "head.sst2"}
    assert all(0 < record.trained[g] <= 1e-3 * (1 + 1e-9) for g in trained)  # the backbone's rate, factor 1
    assert 0 < record.trainable_params < record.total_params / 50
    trainer = recipes.build_trainer(recipe, [trec, sst2], 0, tiny_recipes)
    assert record.trainable_params == memory_facts(trainer.model)["trainable_params"]


def test_per_task_adapters_restored_from_their_trained_tensors_keep_task_a_bitwise_while_task_b_trains(
    tiny_recipes, trec, sst2
):
    """Chapter 11's path: a recipe with one adapter per task trains both tasks; only its trainable tensors are kept
    (the adapters and heads); a fresh model from the same recipe gets them back and trains Task B alone. Task A's
    logits stay bitwise identical, and no group Task A uses moves; with one shared adapter they move."""
    recipe = Recipe(train=("heads",), head_lr=1e-2, backbone_lr=1e-2, epochs=1.0, batch_size=16, adapter="lora")

    def logits(trainer):
        model = trainer.model.eval()
        rows = trainer.tokenized.rows("trec", "validation")
        loader = make_loader(rows, trainer.tokenized.collator("trec"), 64, False)
        with torch.no_grad():
            return torch.cat([model("trec", to_device(b, trainer.device)).float() for b in loader])

    for per_task in (True, False):
        made = recipe.with_(lora_per_task=per_task)
        trained = recipes.train_recipe(made, [trec, sst2], 0, tiny_recipes)
        kept = {n: p.detach().clone() for n, p in trained.model.named_parameters() if p.requires_grad}
        assert all(".lora_" in n or n.startswith("heads.") for n in kept)  # all a LoRA run changes
        restored = recipes.build_trainer(made, [trec, sst2], 0, tiny_recipes)
        with torch.no_grad():
            for name, param in restored.model.named_parameters():
                if name in kept:
                    param.copy_(kept[name])
        before, start = logits(restored), snapshot(restored.model)
        assert torch.equal(before, logits(trained))  # the kept tensors are the whole trained state
        restored.fit(1.0, tasks=["sst2"])
        moved = ~changed_groups(restored.model, start)["bitwise identical"]
        trec_adapter = "lora.trec." if per_task else "lora."
        used_by_trec = [g for g in moved.index if g == "head.trec" or g.startswith(trec_adapter)]
        assert torch.equal(logits(restored), before) == per_task
        assert moved[used_by_trec].any() != per_task
        assert not moved[[g for g in moved.index if not g.startswith(("lora", "head"))]].any()  # base weights


def test_the_rate_figure_lists_each_adapter_group_beside_its_layer():
    import matplotlib

    matplotlib.use("Agg")
    from mtl_helpers.callbacks import History
    from mtl_helpers.plots import plot_lr_groups

    groups = ["embeddings", "layer.0", "lora.layer.0", "layer.1", "lora.trec.layer.1", "lora.layer.1", "head.trec"]
    history = History.from_steps([{"step": 1, "stage": "", "loss": 0.0, "lr": {g: 1e-3 for g in groups}}])
    labels = [t.get_text() for t in plot_lr_groups(history).get_legend().get_texts()]
    assert labels == [
        "head.trec",
        "layer.1",
        "lora.layer.1",
        "lora.trec.layer.1",
        "layer.0",
        "lora.layer.0",
        "embeddings",
    ]


@pytest.mark.slow
def test_lora_on_the_real_minilm_counts_and_merges(tokenizer):
    from mtl_helpers import load_encoder

    encoder, _ = load_encoder()
    model = add_lora(MultiTaskModel(encoder, {"trec": SentenceHead(384, 6)}), rank=8, alpha=16)
    adapters = sum(g.numel for g in layer_groups(model).values() if g.is_adapter)
    assert adapters == 6 * 3 * 2 * 8 * 384  # six layers, query/key/value, A and B of rank 8
    assert memory_facts(model)["trainable_params"] == adapters + 384 * 6 + 6
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, LoraLayer):
                nn.init.normal_(module.lora_B["default"].weight, std=0.02)
        batch = tokenizer(["a short one", "and a slightly longer sentence"], padding=True, return_tensors="pt")
        unmerged = model.eval()("trec", batch)
        assert torch.allclose(merge_lora(model).eval()("trec", batch), unmerged, atol=1e-5, rtol=0)
