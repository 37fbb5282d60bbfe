"""Learning without Forgetting (mtl_helpers.distill): the distillation term is zero when the student
is the teacher, the teacher never changes, the term's gradient reaches the backbone, and bad
settings are refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtl_helpers import MTLError, TrainConfig, Trainer, snapshot
from mtl_helpers.batches import to_device
from mtl_helpers.distill import DistillationTrainer, distillation_kl, head_outputs

FAST = dict(batch_size=16, eval_batch_size=64, progress=False, eval_every=None)


def first_batch(trainer, task):
    return to_device(next(iter(trainer._loader(task, "train", shuffle=False))), trainer.device)


def lwf(model, tokenizer, tasks, **kwargs):
    return DistillationTrainer(
        model, tokenizer, tasks, TrainConfig(epochs=1, lr=1e-2, **FAST), protect="trec", **kwargs
    )


def test_head_outputs_match_the_models_own_forward(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2]).eval()
    trainer = lwf(model, tokenizer, [trec, sst2])
    batch = first_batch(trainer, "sst2")
    outputs = head_outputs(model, batch, ["sst2", "trec"])
    for task in ("sst2", "trec"):
        torch.testing.assert_close(outputs[task], model(task, batch))


def test_the_term_is_zero_when_the_student_is_the_teacher(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    trainer = lwf(model, tokenizer, [trec, sst2])
    model.eval()  # no dropout: the student computes exactly what the teacher does
    batch = first_batch(trainer, "sst2")
    assert abs(float(trainer.distillation_term(batch).detach())) < 1e-6
    plain = F.cross_entropy(model("sst2", batch), batch["labels"])
    torch.testing.assert_close(trainer.loss("sst2", batch), plain)


def test_the_term_is_the_tempered_kl_times_t_squared():
    student, teacher = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    p = torch.softmax(teacher / 2, -1)
    expected = 4 * float((p * (p.log() - torch.log_softmax(student / 2, -1))).sum())
    assert math.isclose(float(distillation_kl(student, teacher, 2.0)), expected, rel_tol=1e-6)
    assert float(distillation_kl(student, student, 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_the_teacher_never_changes_while_the_student_trains(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    trainer = lwf(model, tokenizer, [trec, sst2])
    trainer.freeze("head.trec")
    teacher_before, student_before = snapshot(trainer.teacher), snapshot(model)
    trainer.fit(1, tasks=["sst2"])
    after = dict(trainer.teacher.named_parameters())
    assert all(torch.equal(after[n], t) for n, t in teacher_before.items())
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
    assert not trainer.teacher.training
    moved = dict(model.named_parameters())
    assert any(not torch.equal(moved[n], t) for n, t in student_before.items() if n.startswith("encoder."))
    assert all(torch.equal(moved[n], t) for n, t in student_before.items() if n.startswith("heads.trec."))
    batch = first_batch(trainer, "sst2")
    model.eval()
    assert float(trainer.distillation_term(batch)) > 0  # the student has drifted from the teacher


def test_the_backbone_gets_a_gradient_from_the_term(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    teacher = make_model([trec, sst2], seed=1)  # another model: the term is not at its minimum
    trainer = lwf(model, tokenizer, [trec, sst2], teacher=teacher)
    trainer.freeze("head.trec")
    batch = first_batch(trainer, "sst2")
    term = trainer.distillation_term(batch)
    assert float(term) > 0
    term.backward()
    encoder_grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert encoder_grads and all(g is not None for g in encoder_grads)
    assert sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert all(p.grad is None for p in model.head("trec").parameters())  # frozen: no gradient
    assert all(p.grad is None for p in model.head("sst2").parameters())  # the term does not read head B


def test_the_weight_scales_the_term_and_zero_turns_it_off(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    teacher = make_model([trec, sst2], seed=1)
    model.eval()
    one = lwf(model, tokenizer, [trec, sst2], teacher=teacher, weight=1.0)
    three = lwf(model, tokenizer, [trec, sst2], teacher=teacher, weight=3.0)
    off = lwf(model, tokenizer, [trec, sst2], teacher=teacher, weight=0.0)
    batch = first_batch(one, "sst2")
    torch.testing.assert_close(three.distillation_term(batch), 3 * one.distillation_term(batch))
    plain = Trainer(model, tokenizer, [trec, sst2], TrainConfig(**FAST)).loss("sst2", batch)
    torch.testing.assert_close(off.loss("sst2", batch), plain)
    # batches of the protected task itself keep the plain loss
    trec_batch = first_batch(one, "trec")
    torch.testing.assert_close(
        one.loss("trec", trec_batch), F.cross_entropy(model("trec", trec_batch), trec_batch["labels"])
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("weight", -1.0),
        ("weight", float("nan")),
        ("weight", float("inf")),
        ("weight", "1"),
        ("temperature", 0.0),
        ("temperature", -2.0),
        ("temperature", float("nan")),
        ("temperature", True),
    ],
)
def test_a_bad_weight_or_temperature_is_refused(make_model, tokenizer, trec, sst2, field, value):
    model = make_model([trec, sst2])
    with pytest.raises(MTLError, match=rf"{field}=.*finite number"):
        lwf(model, tokenizer, [trec, sst2], **{field: value})


def test_bad_protection_is_refused(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    config = TrainConfig(**FAST)
    with pytest.raises(MTLError, match="no head for task 'ner'"):
        DistillationTrainer(model, tokenizer, [trec, sst2], config, protect="ner")
    with pytest.raises(MTLError, match="at least one head"):
        DistillationTrainer(model, tokenizer, [trec, sst2], config, protect=[])
    with pytest.raises(MTLError, match="separate copy"):
        DistillationTrainer(model, tokenizer, [trec, sst2], config, protect="trec", teacher=model)
    with pytest.raises(MTLError, match="Every task of this trainer"):
        DistillationTrainer(make_model([trec]), tokenizer, [trec], config, protect="trec")


def test_the_record_names_the_distillation(make_model, tokenizer, trec, sst2):
    trainer = lwf(make_model([trec, sst2]), tokenizer, [trec, sst2], temperature=3.0)
    trainer.freeze("head.trec")
    trainer.fit(0.25, tasks=["sst2"])
    record = trainer.result("lwf-test", "smoke", ("validation",))
    assert record.extra["distillation"] == {"protect": ["trec"], "weight": 1.0, "temperature": 3.0}
