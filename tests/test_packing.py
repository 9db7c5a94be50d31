"""The packed, prefix-shared, chunked path gives the padded path's log-probs and gradients, on three model
families, for pairs, ranked lists and labelled completions; and a whole run matches with the engine off."""

import random

import pytest
import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from prefalign.data.collate import collate_lists, collate_pairs, collate_unpaired
from prefalign.data.packing import first_fit_decreasing
from prefalign.data.tokenize import TokenizedList, TokenizedPair, TokenizedUnpaired
from prefalign.models.logprobs import chunked_head_outputs, sequence_logps
from prefalign.models.packed_attention import enable_packed_attention
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference

from .test_training import make_config

V = 97
SMALL = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=128)
FAMILIES = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**SMALL, num_key_value_heads=2)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SMALL, num_key_value_heads=2)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**SMALL)),
}


def ids(rng, lo, hi):
    return [rng.randrange(3, V) for _ in range(rng.randint(lo, hi))]


def random_pairs(n=7, seed=0):
    rng = random.Random(seed)
    # the last pair mimics one truncated at max_length: long prompt cut to its end, completions cut short
    return [TokenizedPair([1] + ids(rng, 0, 12), ids(rng, 1, 9), ids(rng, 1, 9), None) for _ in range(n - 1)] + [
        TokenizedPair([1] + ids(rng, 30, 30), ids(rng, 2, 2), ids(rng, 1, 1), None, truncated=True)]


def logps_and_grads(model, batch):
    model.zero_grad()
    out = sequence_logps(model, batch)
    (out.sum * torch.linspace(0.5, 1.5, out.sum.numel())).sum().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["segments", "mask"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_pairs_match_padded_logps_and_gradients(family, attention):
    """`segments`: the segment-wise kernel (prefalign_packed); `mask`: the model's eager attention with the
    packed 4D mask, the fallback for models the kernel does not support."""
    torch.manual_seed(0)
    model = FAMILIES[family]()
    if attention == "mask":
        model.set_attn_implementation("eager")
    assert enable_packed_attention(model) == (attention == "segments")
    pairs = random_pairs()
    padded, padded_grads = logps_and_grads(model, collate_pairs(pairs, list(range(7)), 0).tokens)
    batch = collate_pairs(pairs, list(range(7)), 0, packed=True, capacity=64).tokens
    assert batch.input_ids.shape[0] < 14  # several pairs share a row
    packed, packed_grads = logps_and_grads(model, batch)
    torch.testing.assert_close(packed.sum, padded.sum, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.n_tokens, padded.n_tokens)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_packed_lists_unpaired_and_joint_pairs_match_padded():
    torch.manual_seed(1)
    model = FAMILIES["llama"]()
    rng = random.Random(3)
    lists = [TokenizedList([1] + ids(rng, 1, 6), [ids(rng, 1, 5) for _ in range(rng.randint(2, 4))], None) for _ in range(4)]
    unpaired = [TokenizedUnpaired([1] + ids(rng, 1, 6), ids(rng, 1, 5), bool(i % 2), None) for i in range(5)]
    joint = [TokenizedPair([1] + ids(rng, 1, 6), ids(rng, 1, 5), ids(rng, 1, 5), None, rejected_prompt_ids=[1, 5, 6])
             for _ in range(3)]
    with torch.no_grad():
        for collate, items in ((collate_lists, lists), (collate_unpaired, unpaired), (collate_pairs, joint)):
            idx = list(range(len(items)))
            a = sequence_logps(model, collate(items, idx, 0).tokens)
            b = sequence_logps(model, collate(items, idx, 0, packed=True).tokens)
            torch.testing.assert_close(b.sum, a.sum, rtol=0, atol=1e-5)


def test_chunked_logps_equal_full_logps_and_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(37, 8, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    full = torch.log_softmax(head(hidden), -1).gather(1, targets[:, None]).squeeze(1)
    g_full = torch.autograd.grad(full.sum(), [hidden, head.weight])
    chunked = chunked_head_outputs(head, hidden, targets, chunk=5)[:, 0]
    g_chunked = torch.autograd.grad(chunked.sum(), [hidden, head.weight])
    torch.testing.assert_close(chunked, full)
    for a, b in zip(g_full, g_chunked):
        torch.testing.assert_close(a, b)


def test_packed_attention_refuses_sliding_windows_and_is_sdpa_without_a_layout():
    sliding = Qwen2ForCausalLM(Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=4, max_window_layers=0))
    assert not enable_packed_attention(sliding)
    torch.manual_seed(0)
    model = FAMILIES["llama"]()
    x = torch.randint(0, V, (2, 11))
    before = model(input_ids=x).logits
    assert enable_packed_attention(model)
    torch.testing.assert_close(model(input_ids=x).logits, before)  # generation and padded rows are unchanged


def test_first_fit_decreasing_fills_rows():
    bins = first_fit_decreasing([7, 3, 5, 2, 8, 1], capacity=10)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert all(sum([7, 3, 5, 2, 8, 1][i] for i in b) <= 10 for b in bins) and len(bins) == 3
    assert first_fit_decreasing([12, 3], capacity=10) == [[0], [1]]


def loss_curve(tiny_model_dir, pairs_file, out, engine=None, checkpointing=False, steps=8):
    cfg = make_config(tiny_model_dir, pairs_file, out, max_steps=steps, lr=5e-3)
    cfg.engine = cfg.engine.model_copy(update=engine or {})
    cfg.model.gradient_checkpointing = checkpointing
    return [m["loss"] for m in read_metrics(train_preference(cfg).run_dir)]


def test_a_run_with_the_engine_on_matches_one_with_it_off(tiny_model_dir, pairs_file, tmp_path):
    """Everything on (prefix sharing, packing, segment attention, a chunked head of 4 positions, gradient
    checkpointing) against everything off (padded rows, full logits)."""
    on = loss_curve(tiny_model_dir, pairs_file, tmp_path / "on", {"packed": True, "logp_chunk": 4}, checkpointing=True)
    off = loss_curve(tiny_model_dir, pairs_file, tmp_path / "off", {"packed": False})
    assert on == pytest.approx(off, rel=1e-4, abs=1e-5)
    assert on[-1] < on[0]


def test_bf16_autocast_runs_matmuls_in_bf16_and_follows_the_fp32_curve(tiny_model_dir, pairs_file, tmp_path):
    from prefalign.config.schema import EngineConfig
    from prefalign.models.engine import precision_context

    layer = torch.nn.Linear(4, 4)
    with precision_context(EngineConfig(autocast="bf16"), layer):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # master weights stay fp32
    bf16 = loss_curve(tiny_model_dir, pairs_file, tmp_path / "bf16", {"autocast": "bf16"})
    fp32 = loss_curve(tiny_model_dir, pairs_file, tmp_path / "fp32")
    assert bf16 != fp32  # it did change the arithmetic...
    # ...within bf16's precision while the runs are close (at lr 5e-3 they drift apart later)
    assert bf16[:3] == pytest.approx(fp32[:3], abs=0.02)
    assert bf16[-1] < bf16[0]


@pytest.mark.slow
def test_compiled_decoder_follows_the_eager_curve(tiny_model_dir, pairs_file, tmp_path):
    # two steps: the first runs the compiled forward and backward, the second the graphs after an update;
    # on 2 CPU cores each recompilation for a new shape costs minutes
    compiled = loss_curve(tiny_model_dir, pairs_file, tmp_path / "compiled", {"compile": True}, steps=2)
    eager = loss_curve(tiny_model_dir, pairs_file, tmp_path / "eager", steps=2)
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-4)


def test_reference_cache_is_hit_by_a_second_run_and_missed_when_tokenization_changes(tiny_model_dir, pairs_file,
                                                                                      tmp_path, monkeypatch):
    from prefalign.config import ReferenceConfig
    from prefalign.models.reference import PrecomputedReference

    computed = []
    original = PrecomputedReference.compute.__func__
    monkeypatch.setattr(PrecomputedReference, "compute",
                        classmethod(lambda cls, *a: computed.append(1) or original(cls, *a)))

    def run(out, **data):
        cfg = make_config(tiny_model_dir, pairs_file, tmp_path / out, max_steps=2)
        cfg.reference = ReferenceConfig(kind="precomputed")
        cfg.data = cfg.data.model_copy(update=data)
        return [m["loss"] for m in read_metrics(train_preference(cfg).run_dir)]

    first = run("a")
    assert len(computed) == 1 and len(list((tmp_path / "cache" / "reference_logps").glob("*.safetensors"))) == 1
    assert run("b") == first and len(computed) == 1  # a hit: same numbers, no reference pass
    run("c", max_length=12)  # truncation changes the token ids: a miss
    assert len(computed) == 2


def on_completion(grid, mask):
    """Per sequence, the values on its completion, in order (the two layouts use different grids)."""
    return [row[m.bool()] for row, m in zip(grid, mask)]


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_token_level_outputs_of_the_packed_path_match_the_padded_path(family):
    """Per-token log-probs, WPO weights, the reference's hidden states and the token KL (reference's head on
    its hidden states, chunk by chunk) against the padded path, with gradients through the KL."""
    torch.manual_seed(0)
    policy, reference = FAMILIES[family](), FAMILIES[family]()
    pairs = random_pairs()
    layouts = {"padded": collate_pairs(pairs, list(range(7)), 0).tokens,
               "packed": collate_pairs(pairs, list(range(7)), 0, packed=True, capacity=64).tokens}
    out, grads = {}, {}
    for name, batch in layouts.items():
        policy.zero_grad()
        ref = sequence_logps(reference, batch, keep_tokens=True, keep_vocab=True, keep_hidden=True)
        pol = sequence_logps(policy, batch, keep_tokens=True, wpo=True, kl_from=ref, chunk=5)
        (pol.token_kl.sum() + (pol.tokens * pol.mask).sum()).backward()
        out[name] = (ref, pol)
        grads[name] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    (ref_a, pol_a), (ref_b, pol_b) = out["padded"], out["packed"]
    for a, b in [(pol_a.tokens, pol_b.tokens), (pol_a.token_kl, pol_b.token_kl), (ref_a.tokens, ref_b.tokens)]:
        for x, y in zip(on_completion(a.detach(), pol_a.mask), on_completion(b.detach(), pol_b.mask)):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pol_b.wpo, pol_a.wpo, rtol=1e-4, atol=1e-5)
    for layer_a, layer_b in zip(ref_a.hidden, ref_b.hidden):
        for x, y in zip(on_completion(layer_a, pol_a.mask), on_completion(layer_b, pol_b.mask)):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5)
    assert pol_b.token_kl.requires_grad and (pol_b.token_kl >= -1e-6).all()
    for name, grad in grads["padded"].items():
        torch.testing.assert_close(grads["packed"][name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("loss", [{"name": "tdpo", "beta": 0.1},
                                  # the mask's dropout would draw different numbers on the two layouts' grids
                                  {"name": "sparsepo", "beta": 0.1, "mask": "learned", "dropout": 0.0},
                                  {"name": "ld_dpo", "beta": 0.1, "alpha": 0.5},
                                  {"name": "wpo", "beta": 0.1}], ids=lambda x: x["name"])
def test_token_level_losses_train_the_same_packed_or_padded(tiny_model_dir, pairs_file, tmp_path, loss):
    from prefalign.config import LossTerm

    curves = {}
    for packed in (True, False):
        cfg = make_config(tiny_model_dir, pairs_file, tmp_path / str(packed), max_steps=4, lr=5e-3)
        cfg.loss = [LossTerm(**loss)]
        cfg.engine.packed = packed
        curves[packed] = [m["loss"] for m in read_metrics(train_preference(cfg).run_dir)]
    assert curves[True] == pytest.approx(curves[False], rel=1e-4, abs=1e-5)
