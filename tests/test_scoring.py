"""Token-task scoring counts every word of every sentence: words that max_length cut off (or that
have no sub-token at all) are predicted "O", so their gold entities become misses, and the metrics
say how many words and gold entities were cut."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics.sequence_labeling import get_entities

from mtl_helpers import Trainer, TrainConfig, load_task
from mtl_helpers.batches import TokenizedTasks, encode_rows

CUT_LENGTH = 8  # [CLS], six sub-tokens, [SEP]: most CoNLL sentences lose words


def _oracle(model):
    """Make the model predict the gold tag of every labelled sub-token: any score below 1 comes from
    words the model never saw."""

    def forward(task, batch):
        labels = batch["labels"]
        return F.one_hot(labels.clamp(min=0), model.head(task).num_labels).float() * (labels != -100).unsqueeze(-1)

    model.forward = forward
    return model


def _kept_words(tokenizer, words: list[str], max_length: int) -> int:
    """How many leading words keep their first sub-token after truncation (CoNLL words all have one)."""
    ids = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length).word_ids()
    return len({w for w in ids if w is not None})


def _config(max_length: int) -> TrainConfig:
    return TrainConfig(max_length=max_length, progress=False, eval_every=None, device="cpu")


@pytest.fixture(scope="module")
def conll():
    return load_task("conll2003", max_train=30, max_eval=100)


def test_cut_words_count_as_misses_and_f1_equals_seqeval_over_full_sentences(make_model, tokenizer, conll):
    trainer = Trainer(_oracle(make_model([conll])), tokenizer, [conll], _config(CUT_LENGTH))
    result = trainer.evaluate_outcomes("validation")["conll2003"]

    names = conll.label_names
    gold, pred, words_cut, entities_cut = [], [], 0, 0
    for row in conll.splits["validation"]:
        tags = [names[i] for i in row["label"]]
        kept = _kept_words(tokenizer, row["text"], CUT_LENGTH)
        gold.append(tags)
        pred.append(tags[:kept] + ["O"] * (len(tags) - kept))
        words_cut += len(tags) - kept
        entities_cut += sum(end >= kept for _, _, end in get_entities(tags))
    words = sum(len(g) for g in gold)
    assert words_cut > 100 and entities_cut > 10  # the premise: max_length=8 cuts many words and entities

    assert result.metrics["words_cut"] == words_cut
    assert result.metrics["entities_cut"] == entities_cut
    assert result.metrics["words_without_tokens"] == 0
    assert result.metrics["entity_f1"] == pytest.approx(seqeval_f1(gold, pred), rel=1e-12)
    assert result.metrics["entity_f1"] < 0.9
    assert result.metrics["token_accuracy"] == sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / words
    # per sentence, in the split's own order (the Trainer sorts rows by length to score them)
    expected = [
        (
            len(set(get_entities(g)) & set(get_entities(p))),
            len(set(get_entities(p)) - set(get_entities(g))),
            len(set(get_entities(g)) - set(get_entities(p))),
        )
        for g, p in zip(gold, pred)
    ]
    assert [tuple(r) for r in result.outcomes.tolist()] == expected


def test_train_eval_scores_every_word_too(make_model, tokenizer, conll):
    trainer = Trainer(_oracle(make_model([conll])), tokenizer, [conll], _config(CUT_LENGTH))
    rows = trainer.tokenized.source_rows("conll2003", "train_eval")
    result = trainer.evaluate_outcomes("train_eval")["conll2003"]
    expected = sum(len(r["text"]) - _kept_words(tokenizer, r["text"], CUT_LENGTH) for r in rows)
    assert result.metrics["words_cut"] == expected > 0
    assert len(result.outcomes) == len(rows)


def test_untruncated_rows_keep_first_sub_token_labels_and_score_perfectly(make_model, tokenizer, conll):
    rows = conll.splits["validation"]
    for row, encoded in zip(rows, encode_rows(conll, rows, tokenizer, max_length=128)):
        ids = tokenizer(row["text"], is_split_into_words=True).word_ids()
        assert encoded["input_ids"] == tokenizer(row["text"], is_split_into_words=True)["input_ids"]
        first = [w is not None and (i == 0 or ids[i - 1] != w) for i, w in enumerate(ids)]
        assert encoded["labels"] == [row["label"][w] if f else -100 for f, w in zip(first, ids)]
    trainer = Trainer(_oracle(make_model([conll])), tokenizer, [conll], _config(128))
    metrics = trainer.evaluate("validation")["conll2003"]
    scores = metrics["entity_f1"], metrics["token_accuracy"], metrics["words_cut"], metrics["entities_cut"]
    assert scores == (1.0, 1.0, 0, 0)


def test_a_word_without_sub_tokens_is_scored_as_o(make_model, tokenizer):
    """WNUT-17 has words that BERT's tokenizer drops entirely (an emoji's variation selector U+FE0F):
    they have no prediction, so they are predicted "O" instead of vanishing from the sentence."""
    wnut = load_task("wnut_17", max_train=8, max_eval=8)
    person, inside = wnut.label_names.index("B-person"), wnut.label_names.index("I-person")
    row = {"text": ["Ann", "\ufe0f", "Lee", "sings"], "label": [person, inside, inside, 0]}
    assert tokenizer(row["text"], is_split_into_words=True).word_ids().count(1) == 0  # the premise
    wnut.splits["validation"] = [row, {"text": ["Bob", "\ufe0f"], "label": [person, 0]}]
    trainer = Trainer(_oracle(make_model([wnut])), tokenizer, [wnut], _config(128))
    result = trainer.evaluate_outcomes("validation")["wnut_17"]
    # predicted: B-person O I-person O -> entities (person, 0, 0) and (person, 2, 2); gold (person, 0, 2)
    assert result.outcomes.tolist() == [[0, 2, 1], [1, 0, 0]]
    counts = result.metrics["words_without_tokens"], result.metrics["words_cut"], result.metrics["entities_cut"]
    assert counts == (2, 0, 0)
    assert result.metrics["token_accuracy"] == 5 / 6


def test_evaluate_task_refuses_token_scoring_without_or_with_misordered_words(make_model, tokenizer, conll):
    from mtl_helpers import MTLError, evaluate_task
    from mtl_helpers.batches import make_collator, make_loader

    tokenized = TokenizedTasks({"conll2003": conll}, tokenizer, max_length=CUT_LENGTH)
    rows = tokenized.rows("conll2003", "validation")
    loader = make_loader(rows, make_collator(conll, tokenizer), 32, shuffle=False)
    model, cpu = make_model([conll]), torch.device("cpu")
    with pytest.raises(MTLError, match=r"needs words=.*TokenizedTasks.alignments\(task, split\)"):
        evaluate_task(model, conll, "validation", loader, cpu)
    misordered = tokenized.alignments("conll2003", "validation")[::-1]
    with pytest.raises(MTLError, match=r"sentence 0: the word alignment does not fit the loader's labels"):
        evaluate_task(model, conll, "validation", loader, cpu, words=misordered)


# ---------------------------------------------------------------- scoring without a Trainer


@pytest.mark.parametrize("level", ["sentence", "token"])
def test_score_task_gives_the_trainers_outcomes(make_model, tokenizer, trec, conll, level):
    """The free function and trainer.evaluate_outcomes: equal metrics and bitwise equal outcomes in the
    split's row order (token task: cut at CUT_LENGTH, so words without a prediction count too)."""
    from mtl_helpers import score_task

    task = trec if level == "sentence" else conll
    model = make_model([task])
    trainer = Trainer(
        model,
        tokenizer,
        [task],
        TrainConfig(max_length=CUT_LENGTH, eval_batch_size=16, progress=False, eval_every=None, device="cpu"),
    )
    mine = trainer.evaluate_outcomes("validation")[task.name]
    free = score_task(model, tokenizer, task, "validation", batch_size=16, max_length=CUT_LENGTH)
    assert free.metrics == mine.metrics
    assert free.outcomes.dtype == mine.outcomes.dtype and (free.outcomes == mine.outcomes).all()
    assert len(free.outcomes) == len(task.splits["validation"])


def test_score_task_refuses_a_head_that_does_not_fit_the_task(make_model, tokenizer, trec, conll):
    from mtl_helpers import MTLError, score_task
    from mtl_helpers.recipes import replace_name

    model = make_model([trec])
    with pytest.raises(MTLError, match=r"Head 'trec' is a sentence head .* Build the model with MultiTaskModel"):
        score_task(model, tokenizer, replace_name(conll, "trec"), "validation")


def test_evaluate_transfer_scores_like_the_trainer_without_building_an_optimizer(
    make_model, tokenizer, trec, monkeypatch
):
    from mtl_helpers.recipes import evaluate_transfer, replace_name

    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(eval_batch_size=16, progress=False, eval_every=None))
    own = trainer.evaluate_outcomes("validation")["trec"]
    built = []
    real_init = torch.optim.AdamW.__init__

    def spy(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "__init__", spy)
    result = evaluate_transfer(trainer, "trec", replace_name(trec, "trec_again"), "validation")
    assert not built  # scoring a head needs no second Trainer: no optimizer, no audit, no device move
    assert result.task == "trec" and result.metrics == own.metrics and (result.outcomes == own.outcomes).all()
