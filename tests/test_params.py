"""The notebooks' parameter checks (mtl_helpers.params) and the profile parameters (profiles.py).

Every refusal is a ParameterError (an MTLError and a ValueError) whose message names the parameter,
the value it got and what is allowed.
"""

from __future__ import annotations

import math
import re

import pytest

from mtl_helpers import (
    MTLError,
    ParameterError,
    check_number,
    check_numbers,
    check_rate,
    check_rates,
    check_sizes,
    check_task,
    check_task_pair,
    get_profile,
)


@pytest.fixture
def no_profile_variable(monkeypatch):
    monkeypatch.delenv("MTL_PROFILE", raising=False)


# --- seeds: papermill -p passes a list as its text -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seeds", [("[0]", [0]), ("[0, 1, 2]", [0, 1, 2]), (" [3,4] ", [3, 4]), ("(5, 6)", [5, 6])]
)
def test_seeds_written_as_text_are_read_as_the_list(text, seeds, no_profile_variable):
    assert get_profile("smoke").seeds_or(text) == seeds


def test_seeds_as_a_list_and_none_still_work(no_profile_variable):
    profile = get_profile("cpu")
    assert profile.seeds_or([4, 2]) == [4, 2]
    assert profile.seeds_or(None) == list(range(profile.seeds)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", ["zero", "[0, -1]", "[]", "[0, 0]", "[1.5]", "[True]", "0", 3])
def test_bad_seeds_are_refused_naming_the_parameter(bad, no_profile_variable):
    with pytest.raises(ParameterError, match=r"seeds") as caught:
        get_profile("smoke").seeds_or(bad)
    assert isinstance(caught.value, MTLError) and isinstance(caught.value, ValueError)


# --- profile: the parameter is checked even when MTL_PROFILE overrides it -------------------------------------------


def test_a_bogus_profile_parameter_is_refused_when_the_environment_sets_one(monkeypatch):
    monkeypatch.setenv("MTL_PROFILE", "smoke")
    with pytest.raises(
        ParameterError, match=r"'bogus' \(the notebook parameter `profile`\); choose one of smoke, cpu, gpu"
    ):
        get_profile("bogus")


def test_a_bogus_environment_profile_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MTL_PROFILE", "tiny")
    with pytest.raises(ParameterError, match=r"'tiny' \(the environment variable MTL_PROFILE\); choose one of"):
        get_profile("cpu")


def test_the_environment_wins_over_a_different_valid_parameter_and_says_so(monkeypatch, capsys):
    monkeypatch.setenv("MTL_PROFILE", "smoke")
    assert get_profile("cpu").name == "smoke"
    assert capsys.readouterr().out == "MTL_PROFILE=smoke overrides profile='cpu': using the smoke profile.\n"


def test_agreeing_or_absent_environment_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("MTL_PROFILE", "smoke")
    assert get_profile("smoke").name == "smoke"
    monkeypatch.delenv("MTL_PROFILE")
    assert get_profile("gpu").name == "gpu"
    assert capsys.readouterr().out == ""


def test_a_profile_that_is_not_a_name_is_refused(no_profile_variable):
    with pytest.raises(ParameterError, match="Unknown profile"):
        get_profile(["cpu"])


# --- tasks ----------------------------------------------------------------------------------------------------------


def test_a_token_task_is_refused_where_the_chapter_needs_sentences():
    with pytest.raises(ParameterError) as caught:
        check_task_pair("trec", "conll2003", level="sentence", because="it caches sentence features")
    assert str(caught.value) == (
        "task_b='conll2003' is a token-level task; this chapter needs a sentence-level task "
        "(it caches sentence features): choose one of rotten_tomatoes, sst2, trec."
    )


def test_levels_can_differ_per_task_and_parameters_keep_their_names():
    names = ("task_a", "ner_task")
    assert check_task_pair("trec", "wnut_17", level=("sentence", "token"), names=names) == ("trec", "wnut_17")
    with pytest.raises(ParameterError, match=r"^ner_task='sst2' is a sentence-level task; .* conll2003, wnut_17\.$"):
        check_task_pair("trec", "sst2", level=("sentence", "token"), names=("task_a", "ner_task"))


def test_two_equal_tasks_are_refused():
    with pytest.raises(ParameterError, match="task_a and task_b must be two different tasks, both are 'sst2'"):
        check_task_pair("sst2", "sst2", level=None)


def test_an_unknown_task_is_refused_with_every_choice():
    with pytest.raises(
        ParameterError,
        match=r"^task_a='imdb' is not a task of the registry; .*: choose one of "
        r"conll2003, rotten_tomatoes, sst2, trec, wnut_17\.$",
    ):
        check_task("task_a", "imdb")


def test_label_descriptions_are_asked_for_by_name():
    assert check_task("task_a", "trec", "sentence", label_descriptions=True) == "trec"
    with pytest.raises(ParameterError, match="with label descriptions: choose one of rotten_tomatoes, sst2, trec"):
        check_task("task_a", "wnut_17", None, label_descriptions=True)


def test_a_level_that_does_not_exist_is_the_chapters_mistake():
    with pytest.raises(ValueError, match="level must be one of"):
        check_task("task_a", "trec", "document")


# --- numbers --------------------------------------------------------------------------------------------------------


def test_numbers_within_bounds_pass_unchanged():
    assert check_number("epochs", 0.5, above=0) == 0.5
    assert check_number("repeats", 2, at_least=2, integer=True) == 2
    assert check_number("curve_every", 5, above=0, at_most=5) == 5
    assert check_rate("lr", 1e-3) == 1e-3


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, True, "1", None])
def test_numbers_outside_bounds_are_refused_naming_the_bounds(value):
    expected = f"phase1_epochs={value!r}: expected a finite number above 0."
    with pytest.raises(ParameterError, match=f"^{re.escape(expected)}$"):
        check_number("phase1_epochs", value, above=0)


def test_integer_and_reason_are_named():
    with pytest.raises(ParameterError, match=r"^timing_steps=2\.5: expected a whole number at least 2 \(a median\)\.$"):
        check_number("timing_steps", 2.5, at_least=2, integer=True, because="a median")
    with pytest.raises(ParameterError, match=r"^lr=1: expected a finite number above 0 and below 1 \(a learning"):
        check_rate("lr", 1)


def test_lists_written_as_text_are_read_and_checked():
    assert check_rates("frozen_rates", "[1e-3, 0.01]") == [1e-3, 0.01]
    top_k = check_numbers("top_k", "[0, 2, 6]", at_least=0, at_most=6, integer=True, min_length=2, including=6)
    assert top_k == [0, 2, 6]
    with pytest.raises(ParameterError, match=r"^frozen_rates='\[1e-3': expected a list such as \[0, 1\]"):
        check_rates("frozen_rates", "[1e-3")


@pytest.mark.parametrize("values", [[0, 2], [2, 6, 6], [6], [0, 7, 6], [0.5, 6], "[]", 6])
def test_lists_breaking_a_rule_are_refused_naming_every_rule(values):
    with pytest.raises(ParameterError) as caught:
        check_numbers(
            "top_k",
            values,
            at_least=0,
            at_most=6,
            integer=True,
            min_length=2,
            distinct=True,
            including=6,
            because="the backbone's layers",
        )
    assert str(caught.value).startswith("top_k=")
    assert str(caught.value).endswith(
        "expected a list of at least 2 different whole numbers at least 0 and at most 6, "
        "including 6 (the backbone's layers)."
    )


def test_sizes_default_to_the_profile_and_come_sorted():
    assert check_sizes("low_sizes", None, (125, 50)) == [50, 125]
    assert check_sizes("low_sizes", "[150, 50]", (8,)) == [50, 150]
    with pytest.raises(
        ParameterError,
        match=r"^low_sizes=\[0\]: expected None \(the profile's sizes, \[8\]\) or a "
        r"non-empty list of different whole numbers at least 1",
    ):
        check_sizes("low_sizes", [0], (8,))
