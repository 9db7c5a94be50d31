"""Reward-model calibration per group of annotators (MORE): each group's ECE against a hand computation, and
the errors when the group column is partial or absent."""

import math

import numpy as np
import pytest

from prefalign.data.errors import RowRef
from prefalign.data.examples import PreferencePair
from prefalign.rewards.evaluate import ScoredPairs, summarize


def pairs(users):
    return [PreferencePair("p", "a", "b", RowRef("d.jsonl", i, i + 1), tags={} if u is None else {"user": u})
            for i, u in enumerate(users)]


def test_each_group_has_its_own_ece():
    # group a: margins 2 and 2 (confidence s(2) = 0.881, both right): ECE = 1 - 0.881
    # group b: margins 2 and -2 (confidence 0.881 each, one right):   ECE = |0.5 - 0.881|
    margins = np.array([2.0, 2.0, 2.0, -2.0])
    summary = summarize(ScoredPairs(pairs(["a", "a", "b", "b"]), margins), subset_column="user")
    conf = 1 / (1 + math.exp(-2))
    assert summary["subsets"]["a"] == pytest.approx({"accuracy": 1.0, "ece": 1 - conf, "n": 2})
    assert summary["subsets"]["b"] == pytest.approx({"accuracy": 0.5, "ece": conf - 0.5, "n": 2})
    assert summary["ece"] == pytest.approx(abs(0.75 - conf))  # pooled, every pair in one bin


def test_a_partial_group_column_is_an_error_naming_the_first_row_without_it():
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: no 'user' column \(1 of 3 pairs lack it\)"):
        summarize(ScoredPairs(pairs(["a", None, "b"]), np.zeros(3)), subset_column="user")
    assert "subsets" not in summarize(ScoredPairs(pairs([None, None]), np.zeros(2)), subset_column="user")
