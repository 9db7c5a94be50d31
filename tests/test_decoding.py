"""Decoding-time alignment: guidance as a logits processor, caching, best-of-N, value training targets,
self-consistency rules, and each strategy on a handful of toy prompts."""

from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.decoding.best_of_n import best_of_n, best_of_n_kl_bound
from prefalign.decoding.guidance import Guide, GuidedLogits, ModelGuide, PrefixScorer
from prefalign.decoding.sampling import generate, sample
from prefalign.decoding.self_consistency import (
    adaptive_consistency,
    beta_stop,
    majority_vote,
    soft_vote,
    universal_consistency,
)
from prefalign.decoding.strategies import STRATEGIES, DecodeSetup, decode
from prefalign.decoding.value_model import lambda_returns, new_value_model
from prefalign.evaluation.pairwise_judges import gold_batch_reward
from prefalign.models.loading import TOY_BASE
from prefalign.toy.world import split_prompts

PROMPTS = split_prompts()[1][:6]


@pytest.fixture(scope="module")
def toy():
    return AutoModelForCausalLM.from_pretrained(TOY_BASE).eval(), AutoTokenizer.from_pretrained(TOY_BASE)


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    value = new_value_model(str(TOY_BASE))
    torch.nn.init.normal_(value.head.weight, std=0.3)  # a random but non-constant scorer
    return value.eval()


def test_args_with_weight_zero_and_k_one_is_greedy_decoding(toy, scorer):
    model, tok = toy
    greedy = generate(model, tok, PROMPTS, max_new_tokens=20, do_sample=False)
    for k, w in ((1, 5.0), (10, 0.0)):
        guided = generate(model, tok, PROMPTS, max_new_tokens=20, do_sample=False, logits_processor=[
            GuidedLogits([Guide(ModelGuide(scorer, tok.pad_token_id), w)], k=k)])
        assert [s.completion_ids for s in guided] == [s.completion_ids for s in greedy]


def test_cached_and_recomputed_args_choose_the_same_tokens_and_scores(toy, scorer):
    model, tok = toy
    runs = {}
    for cache in (True, False):
        guide = ModelGuide(scorer, tok.pad_token_id, cache=cache)
        seen = []
        def spy(ids, cand, guide=guide, seen=seen):
            out = guide(ids, cand)
            seen.append(out)
            return out
        out = generate(model, tok, PROMPTS, max_new_tokens=16, do_sample=False, use_cache=cache,
                       logits_processor=[GuidedLogits([Guide(spy, 3.0)], k=5)])
        runs[cache] = ([s.completion_ids for s in out], seen)
    assert runs[True][0] == runs[False][0]
    for a, b in zip(runs[True][1], runs[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    greedy = generate(model, tok, PROMPTS, max_new_tokens=16, do_sample=False)
    assert runs[True][0] != [s.completion_ids for s in greedy]  # the guide did steer


def test_guided_logits_by_hand():
    """VAS: logits + beta (V - mean over top-k) on the top k, -inf elsewhere."""
    scores = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    values = torch.tensor([[1.0, 4.0]])  # for the top-2 tokens, in topk order: token 1, then token 3

    def guide(ids, cand):
        assert cand.tolist() == [[1, 3]]
        return values

    out = GuidedLogits([Guide(guide, 0.5)], k=2, centre=True)(torch.zeros(1, 3, dtype=torch.long), scores)
    assert out[0, 0] == float("-inf") and out[0, 2] == float("-inf")
    assert out[0, 1].item() == pytest.approx(3.0 + 0.5 * (1.0 - 2.5))
    assert out[0, 3].item() == pytest.approx(2.0 + 0.5 * (4.0 - 2.5))
    two = GuidedLogits([Guide(guide, 0.5), Guide(guide, 1.0)], k=2)(torch.zeros(1, 3, dtype=torch.long), scores)
    assert two[0, 3].item() == pytest.approx(2.0 + 1.5 * 4.0)  # several guides add with their own weights


def test_best_of_n_with_a_constant_scorer_returns_a_sample_of_the_base(toy):
    model, tok = toy
    chosen, drawn = best_of_n(model, tok, PROMPTS, lambda p, r: [0.0] * len(p), n=4, max_new_tokens=20, seed=3)
    groups = sample(model, tok, PROMPTS, n=4, max_new_tokens=20, seed=3)
    assert [c.completion_ids for c in chosen] == [g[0].completion_ids for g in groups]
    assert drawn == sum(len(s.completion_ids) for g in groups for s in g)
    assert best_of_n_kl_bound(1) == 0 and best_of_n_kl_bound(4) == pytest.approx(1.3863 - 0.75, abs=1e-4)


def test_lambda_returns_by_hand():
    values = torch.tensor([[9.0, 1.0, 2.0, 3.0]])
    completion = torch.tensor([[False, True, True, True]])
    reward = torch.tensor([10.0])
    mc = lambda_returns(values, completion, reward, lam=1.0)
    assert mc[0, 1:].tolist() == [10.0, 10.0, 10.0]  # CD-FUDGE: every prefix regresses on the final reward
    td = lambda_returns(values, completion, reward, lam=0.0)
    assert td[0, 1:].tolist() == [2.0, 3.0, 10.0]  # TD(0): the next prefix's value, the reward at the end
    half = lambda_returns(values, completion, reward, lam=0.5)
    assert half[0, 3] == 10.0 and half[0, 2] == pytest.approx(0.5 * 3 + 0.5 * 10)
    assert half[0, 1] == pytest.approx(0.5 * 2 + 0.5 * (0.5 * 3 + 0.5 * 10))


def test_majority_vote_and_adaptive_consistency_stopping():
    assert majority_vote(["3", None, "4", "3", "4"]) == "3"  # tie: the first seen
    assert majority_vote([None, None]) is None
    # Beta(v1+1, v2+1) mass above 1/2: 4 votes to 0 is 1 - 0.5^5 = 0.969 >= 0.95; 3 to 0 is 0.9375
    assert beta_stop(Counter({"a": 4})) and not beta_stop(Counter({"a": 3}))
    assert not beta_stop(Counter({"a": 5, "b": 4}))
    answers = iter(["7", "7", "7", "7", "9", "9"])
    result = adaptive_consistency(lambda i: next(answers), max_samples=6)
    assert (result.answer, result.samples_used) == ("7", 4)
    split = iter(["1", "2"] * 8)
    assert adaptive_consistency(lambda i: next(split), max_samples=16).samples_used == 16


def test_soft_and_universal_consistency():
    assert soft_vote(["1", "2", "2"], [0.9, 0.3, 0.3]) == "1"
    assert majority_vote(["1", "2", "2"]) == "2"
    responses = ["the lamp is great", "the lamp is great and red", "cat dog", "the lamp is red"]
    assert universal_consistency(responses) == 1


@pytest.fixture(scope="module")
def setup(toy, scorer):
    model, tok = toy
    return DecodeSetup(model, tok, score=gold_batch_reward, reward_model=scorer, values=[(scorer, 1.0)],
                       baseline=model, k=3, horizon=4, max_new_tokens=16)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_returns_one_completion_per_prompt(setup, strategy):
    out = decode(strategy, setup, PROMPTS[:3])
    assert len(out.samples) == 3 and all(s.prompt == p for s, p in zip(out.samples, PROMPTS[:3]))
    assert out.tokens_drawn >= sum(len(s.completion_ids) for s in out.samples)
    assert all(len(s.completion_ids) <= 16 for s in out.samples)


def test_strategies_explain_what_they_miss(toy):
    model, tok = toy
    with pytest.raises(ValueError, match="needs a scorer"):
        decode("best-of-n", DecodeSetup(model, tok), PROMPTS[:1])
    with pytest.raises(ValueError, match="value models"):
        decode("vas", DecodeSetup(model, tok), PROMPTS[:1])
    with pytest.raises(ValueError, match="unknown strategy"):
        decode("beam-of-light", DecodeSetup(model, tok), PROMPTS[:1])


def test_reward_model_scorer_needs_a_scalar_decoder(tmp_path):
    from prefalign.rewards.model import RewardSpec, build_reward_model

    build_reward_model(str(TOY_BASE), RewardSpec(kind="decoder", head="gpm", dim=4)).save(tmp_path / "gpm")
    with pytest.raises(ValueError, match="scalar head"):
        PrefixScorer.from_reward_model(str(tmp_path / "gpm"))


def test_decode_cli_with_a_saved_value_model(toy, tmp_path):
    import json

    from typer.testing import CliRunner

    from prefalign.cli.main import app
    from prefalign.decoding.value_model import Rollouts, load_value_model, save_value_model, train_value

    model, tok = toy
    rollouts = Rollouts(sample(model, tok, PROMPTS[:4], max_new_tokens=8)[0] + [s[0] for s in sample(
        model, tok, PROMPTS[:4], max_new_tokens=8, seed=1)], [1.0] * 8)
    value = new_value_model(str(TOY_BASE))
    losses = train_value(value, rollouts, tok.pad_token_id, steps=3, batch_size=4)
    assert losses[-1] < losses[0]
    save_value_model(value, tok, tmp_path / "value")
    again = load_value_model(tmp_path / "value")
    ids = torch.tensor([[2, 10, 11]])
    mask = torch.ones_like(ids)
    torch.testing.assert_close(again(ids, mask, mask.cumsum(-1) - 1)[0], value(ids, mask, mask.cumsum(-1) - 1)[0])
    runner = CliRunner()
    out = tmp_path / "decoded.jsonl"
    result = runner.invoke(app, ["decode", "--strategy", "cd-token", "--value", f"{tmp_path / 'value'}=2.0",
                                 "--scorer", "gold", "--n-prompts", "3", "--max-new-tokens", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["reward"], float) for r in rows)
    bad = runner.invoke(app, ["decode", "--strategy", "best-of-n", "--n-prompts", "1"])
    assert bad.exit_code == 2 and "needs a scorer" in bad.output


def test_sampling_is_seeded_and_leaves_the_callers_rng_alone(toy):
    from prefalign.decoding.sampling import continue_ids, sample

    model, tokenizer = toy
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = [s.text for row in sample(model, tokenizer, ["review the red lamp ."], n=3, seed=5) for s in row]
    ids = tokenizer("list 2 fruits .")["input_ids"]
    continued = continue_ids(model, [ids], tokenizer.pad_token_id, tokenizer.eos_token_id, 8, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # a training run's stream is not consumed
    torch.manual_seed(999)  # another global state changes nothing: the seed alone decides
    assert [s.text for row in sample(model, tokenizer, ["review the red lamp ."], n=3, seed=5) for s in row] == first
    assert continue_ids(model, [ids], tokenizer.pad_token_id, tokenizer.eos_token_id, 8, seed=5) == continued
