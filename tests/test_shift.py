"""The distance of an out-of-distribution set (mtl_helpers.shift): a domain classifier and unseen words."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_helpers import MTLError
from mtl_helpers.shift import domain_shift, unseen_word_share

RNG = np.random.default_rng(0)
TEXTS = ["a good film", "a bad film"]


def test_two_samples_of_one_distribution_cannot_be_told_apart():
    a, b = RNG.normal(size=(300, 8)), RNG.normal(size=(300, 8))
    shift = domain_shift(a, b, TEXTS, TEXTS)
    assert shift.low < 0.5 < shift.high and shift.rows == 300 and shift.unseen_words == 0.0


def test_shifted_samples_are_told_apart_and_the_sentence_says_so():
    a, b = RNG.normal(size=(300, 8)), RNG.normal(loc=1.0, size=(200, 8))
    shift = domain_shift(a, b, TEXTS, ["a great movie"])
    assert shift.low > 0.8 and shift.rows == 200  # balanced: the smaller set's size
    assert shift.unseen_words == pytest.approx(2 / 3)
    assert "50% would mean no shift" in shift.sentence("SST-2", "Rotten Tomatoes")


def test_unseen_word_share_is_lower_cased_and_counts_tokens():
    assert unseen_word_share(["The Film"], ["the film the plot"]) == pytest.approx(1 / 4)
    with pytest.raises(MTLError, match="no words"):
        unseen_word_share(TEXTS, ["..."])


def test_bad_shapes_and_too_few_rows_are_refused():
    with pytest.raises(MTLError, match="same width"):
        domain_shift(np.zeros((20, 3)), np.zeros((20, 4)), TEXTS, TEXTS)
    with pytest.raises(MTLError, match="at least 10 rows"):
        domain_shift(np.zeros((4, 3)), np.zeros((20, 3)), TEXTS, TEXTS)
