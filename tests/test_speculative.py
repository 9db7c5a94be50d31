"""Speculative sampling: the acceptance rule by hand, greedy output equal to the policy's own, the sampled
distribution equal to the policy's (a chi-square test against the exact two-token distribution), and the
draft option of `prefalign decode`."""

import copy
import json

import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.decoding.sampling import generate, left_pad
from prefalign.decoding.speculative import residual, speculative_generate, verify
from prefalign.decoding.strategies import DecodeSetup, decode
from prefalign.models.loading import TOY_BASE
from prefalign.toy.model import new_toy_model
from prefalign.toy.world import split_prompts

PROMPTS = split_prompts()[1][:8]


@pytest.fixture(scope="module")
def toy():
    return AutoModelForCausalLM.from_pretrained(TOY_BASE).eval(), AutoTokenizer.from_pretrained(TOY_BASE)


@pytest.fixture(scope="module")
def noisy_draft(toy):
    """The base with noise on every weight: it agrees with the base often, not always."""
    draft = copy.deepcopy(toy[0])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return draft


def test_acceptance_rule_and_residual_by_hand():
    p = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]])  # [1, k+1 = 3, V = 3]
    q = torch.tensor([[[0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]])
    drafts = torch.tensor([[1, 2]])
    # token 1 at step 0 is kept with probability p/q = 0.3/0.6 = 0.5; token 2 at step 1 with 0.8/0.8 = 1
    assert verify(p, q, drafts, torch.tensor([[0.49, 0.99]])).tolist() == [2]
    assert verify(p, q, drafts, torch.tensor([[0.51, 0.0]])).tolist() == [0]  # a rejection ends the run
    r = residual(p[:, 0], q[:, 0])
    torch.testing.assert_close(r, torch.tensor([[1.0, 0.0, 0.0]]))  # max(0, p - q) = [0.3, 0, 0], normalised
    # the emitted token's law: q(x) min(1, p/q) + (1 - sum min(p, q)) r(x) is p
    kept_mass = torch.minimum(p[0, 0], q[0, 0])
    torch.testing.assert_close(kept_mass + (1 - kept_mass.sum()) * r[0], p[0, 0])
    torch.testing.assert_close(residual(p[:, 1], q[:, 1]), p[:, 1])  # p == q: falls back to p


def test_greedy_speculation_is_the_policys_greedy_decoding(toy, noisy_draft):
    model, tok = toy
    greedy = [s.completion_ids for s in generate(model, tok, PROMPTS, 24, do_sample=False)]
    for draft in (model, noisy_draft):
        out, stats = speculative_generate(model, draft, tok, PROMPTS, 24, k=3, temperature=0.0)
        assert [s.completion_ids for s in out] == greedy
    assert 0.2 < stats.acceptance < 0.98  # the noisy draft was both accepted and overruled
    _, same = speculative_generate(model, model, tok, PROMPTS, 24, k=3, temperature=0.0)
    assert same.acceptance == 1.0 and same.emitted == 4 * same.drafted // 3  # k drafts + 1 per round, all kept


@torch.no_grad()
def _exact_two_token_law(model, tok, prompt: str) -> dict[tuple[int, ...], float]:
    ids, attn = left_pad(tok, [prompt])[1:]
    first = torch.softmax(model(input_ids=ids, attention_mask=attn).logits[0, -1], -1)
    vocab = torch.arange(len(first))
    both = torch.cat([ids.repeat(len(vocab), 1), vocab[:, None]], dim=1)
    second = torch.softmax(model(input_ids=both).logits[:, -1], -1)
    law = {(tok.eos_token_id,): float(first[tok.eos_token_id])}
    for x in vocab.tolist():
        if x != tok.eos_token_id:
            for y in vocab.tolist():
                law[(x, y)] = float(first[x] * second[x, y])
    return law


def test_speculative_samples_follow_the_policys_distribution(toy, noisy_draft):
    """3,000 two-token samples of one prompt, binned by outcome (outcomes expected fewer than 10 times pooled),
    against the policy's exact law; a draft-only sampler fails the same test (p < 1e-10)."""
    model, tok = toy
    prompt, n = PROMPTS[0], 3000
    law = _exact_two_token_law(model, tok, prompt)
    samples, stats = speculative_generate(model, noisy_draft, tok, [prompt] * n, 2, k=4, seed=3)
    assert 0.2 < stats.acceptance < 0.98

    def counts(rows):
        seen = {}
        for s in rows:
            seen[tuple(s.completion_ids)] = seen.get(tuple(s.completion_ids), 0) + 1
        return seen

    def p_value(seen):
        big = [o for o, pr in law.items() if pr * n >= 10]
        expected = [law[o] * n for o in big] + [n * (1 - sum(law[o] for o in big))]
        observed = [seen.get(o, 0) for o in big] + [n - sum(seen.get(o, 0) for o in big)]
        return chisquare(observed, expected).pvalue

    assert p_value(counts(samples)) > 1e-3
    draft_only = generate(noisy_draft, tok, [prompt] * n, 2, seed=3)
    assert p_value(counts(draft_only)) < 1e-10  # the test can tell a wrong distribution


def test_speculation_is_refused_where_it_would_change_the_distribution(toy, noisy_draft, toy_tokenizer):
    model, tok = toy
    with pytest.raises(ValueError, match="top-p"):
        generate(model, tok, PROMPTS, 8, top_p=0.9, draft=noisy_draft)
    with pytest.raises(ValueError, match="reshapes the policy's distribution"):
        decode("args", DecodeSetup(model, tok, score=lambda p, r: [0.0] * len(p), draft=noisy_draft), PROMPTS)
    other = new_toy_model(toy_tokenizer, hidden=16, layers=1, heads=2, intermediate=32)
    other.resize_token_embeddings(len(toy_tokenizer) + 3)
    with pytest.raises(ValueError, match="vocabulary"):
        speculative_generate(model, other, tok, PROMPTS, 8)


def test_decode_cli_samples_speculatively_with_a_built_draft(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from prefalign.cli.main import app
    from prefalign.toy import draft as toy_draft

    monkeypatch.setattr(toy_draft, "DRAFT_TRAINER", toy_draft.DRAFT_TRAINER.model_copy(update={"max_steps": 10}))
    runner = CliRunner()
    built = runner.invoke(app, ["toy", "build-draft", "--out", str(tmp_path / "draft")])
    assert built.exit_code == 0, built.output
    out = tmp_path / "decoded.jsonl"
    result = runner.invoke(app, ["decode", "--strategy", "best-of-n", "--k", "2", "--scorer", "gold", "--draft",
                                 str(tmp_path / "draft"), "--draft-tokens", "3", "--n-prompts", "3",
                                 "--max-new-tokens", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 3
    refused = runner.invoke(app, ["decode", "--strategy", "cfg", "--draft", str(tmp_path / "draft"),
                                  "--n-prompts", "1", "--out", str(out)])
    assert refused.exit_code == 2 and "speeds up plain sampling only" in refused.output


def test_online_and_rl_rollouts_sample_speculatively_with_a_draft(tmp_path):
    """online.draft / rl.draft: the loops run and log their rollouts; here the draft is the toy base itself,
    which the policy drifts away from as it trains."""
    from prefalign.online.recipe import train_online
    from prefalign.online.rollouts import read_rollouts
    from prefalign.rl.recipe import train_rl
    from tests.test_online import online_config
    from tests.test_rl import rl_config

    cfg = online_config(tmp_path / "online", max_steps=4)
    cfg.online.draft = "toy"
    run = train_online(cfg)
    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    assert {r["round"] for r in rows} == {0, 1} and all(len(r["completions"]) == 3 for r in rows)
    cfg = rl_config(tmp_path / "rl", max_steps=2)
    cfg.rl.draft = "toy"
    assert train_rl(cfg).loop.steps == 2
