"""Model merging: each method against values worked by hand, LiNeS' depth scaling, and `prefalign merge` on
real folders (policies and reward models)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.merging.layer_scaling import depths, lines_scales
from prefalign.merging.merge import MergeRecipe, merge_modules
from prefalign.merging.methods import MERGE_METHODS, MergeSettings

BASE = torch.tensor([0.0, 0.0, 0.0, 0.0])
THETAS = torch.tensor([[1.0, -2.0, 0.5, 0.0],
                       [3.0, 1.0, -0.5, 0.2]])


def run(method: str, weights=(0.5, 0.5), density=1.0) -> torch.Tensor:
    """The merge of THETAS (as task vectors of a zero base)."""
    base = None if method == "linear" else BASE
    return MERGE_METHODS[method](THETAS, base, MergeSettings(torch.tensor(weights), density))


def test_linear_is_the_weighted_average_of_the_weights():
    assert run("linear", (1.0, 3.0)).tolist() == pytest.approx([2.5, 0.25, -0.25, 0.15])


def test_task_arithmetic_adds_scaled_task_vectors_to_the_base():
    base = torch.tensor([1.0, 1.0, 1.0, 1.0])
    merged = MERGE_METHODS["task_arithmetic"](THETAS + base, base, MergeSettings(torch.tensor([1.0, 0.5])))
    assert merged.tolist() == pytest.approx([1 + 1 + 1.5, 1 - 2 + 0.5, 1 + 0.5 - 0.25, 1 + 0.1])


def test_preference_vectors_add_each_plus_minus_difference_scaled_by_its_coefficient():
    base = torch.tensor([1.0, 1.0])
    thetas = torch.tensor([[3.0, 1.0], [1.0, 2.0],    # preference 1: plus, minus -> phi_1 = (2, -1)
                           [0.0, 4.0], [1.0, 1.0]])   # preference 2: phi_2 = (-1, 3)
    merged = MERGE_METHODS["preference_vectors"](thetas, base, MergeSettings(torch.tensor([0.5, 2.0])))
    assert merged.tolist() == pytest.approx([1 + 0.5 * 2 - 2.0, 1 - 0.5 + 6.0])
    assert MergeRecipe("preference_vectors").settings(4).weights.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="come in \\(plus, minus\\) pairs; got 3"):
        MergeRecipe("preference_vectors").settings(3)
    with pytest.raises(ValueError, match="3 weights for 2 pairs of models"):
        MergeRecipe("preference_vectors", [1.0, 1.0, 1.0]).settings(4)


def test_ties_trims_elects_the_sign_and_averages_the_agreeing_entries():
    # density 0.5 keeps the 2 largest |tau| per model: model 0 keeps -2 and 1; model 1 keeps 3 and 1.
    # entry 0: 1 and 3 agree -> mean 2; entry 1: -2 and 1, summed sign negative -> -2 alone; rest trimmed.
    assert run("ties", (1.0, 1.0), density=0.5).tolist() == pytest.approx([2.0, -2.0, 0.0, 0.0])
    # density 1: entry 2's 0.5 and -0.5 sum to 0, and a zero sum elects + (peft's rule), so 0.5 alone is kept
    assert run("ties", (1.0, 1.0)).tolist() == pytest.approx([2.0, -2.0, 0.5, 0.2])


def test_dare_drops_at_the_rate_and_rescales_so_the_mean_is_kept():
    base = torch.zeros(20000)
    thetas = torch.ones(2, 20000)
    merged = MERGE_METHODS["dare_linear"](thetas, base, MergeSettings(torch.tensor([0.5, 0.5]), density=0.25, seed=3))
    kept = (merged != 0).float().mean().item()
    assert kept == pytest.approx(1 - 0.75 ** 2, abs=0.02)  # an entry is zero only if both models dropped it
    assert merged.mean().item() == pytest.approx(1.0, abs=0.03)
    again = MERGE_METHODS["dare_linear"](thetas, base, MergeSettings(torch.tensor([0.5, 0.5]), density=0.25, seed=3))
    assert torch.equal(merged, again)  # seeded: the same recipe gives the same weights


def test_lines_scales_task_vectors_linearly_with_depth():
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.weight", "model.layers.1.mlp.weight",
             "model.layers.2.mlp.weight", "model.norm.weight", "lm_head.weight"]
    assert depths(names) == {names[0]: 0, names[1]: 0, names[2]: 1, names[3]: 2, names[4]: 2, names[5]: 2}
    assert list(lines_scales(names, 0.2, 0.8).values()) == pytest.approx([0.2, 0.2, 0.6, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="numbered blocks"):
        lines_scales(["weight", "bias"], 0.2, 0.8)


def _shifted(model: torch.nn.Module, by: float) -> torch.nn.Module:
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(by)
    return other


def test_merge_modules_on_a_real_model_and_lines_keeps_shallow_layers_near_the_base(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    a, b = _shifted(base, 0.1), _shifted(base, 0.3)
    soup = merge_modules([a, b], MergeRecipe("linear"))
    for (name, p), p0 in zip(soup.named_parameters(), base.parameters()):
        torch.testing.assert_close(p, p0 + 0.2, msg=name)
    edited = merge_modules([a], MergeRecipe("task_arithmetic", lines=(0.0, 1.0)), base)
    shift = {n: (p - p0).mean().item() for (n, p), p0 in zip(edited.named_parameters(), base.parameters())}
    assert shift["model.embed_tokens.weight"] == pytest.approx(0.0, abs=1e-6)  # depth 0 with alpha 0
    assert shift["model.layers.0.mlp.up_proj.weight"] == pytest.approx(0.0, abs=1e-6)
    assert shift["model.layers.1.mlp.up_proj.weight"] == pytest.approx(0.1, abs=1e-6)  # the deepest keeps all
    with pytest.raises(ValueError, match="needs the base"):
        merge_modules([a, b], MergeRecipe("ties"))


def test_merge_refuses_another_architecture(tiny_model_dir, toy_tokenizer):
    from transformers import AutoModelForCausalLM

    from prefalign.toy.model import new_toy_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    wider = new_toy_model(toy_tokenizer, hidden=48, layers=2, heads=2, intermediate=64)
    with pytest.raises(ValueError, match="does not have the architecture.*shape"):
        merge_modules([base, wider], MergeRecipe("linear"), labels=["a", "b"])


def test_cli_merges_folders_and_records_the_recipe(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for name, by in (("a", 0.1), ("b", -0.3)):
        _shifted(base, by).save_pretrained(tmp_path / name)
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["merge", "--model", str(tmp_path / "a"), "--model", str(tmp_path / "b"),
                                      "--base", str(tiny_model_dir), "--method", "task_arithmetic",
                                      "--weights", "1,0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    merged = load_file(out / "model.safetensors")
    original = load_file(tiny_model_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(merged[name], original[name] + 0.1 - 0.15)
    assert json.loads((out / "merge.json").read_text())["weights"] == [1.0, 0.5]
    assert (out / "tokenizer_config.json").exists()  # loadable on its own
    result = CliRunner().invoke(app, ["merge", "--model", str(tmp_path / "a"), "--method", "ties", "--out",
                                      str(tmp_path / "bad")])
    assert result.exit_code == 2 and "needs the base" in result.output
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".tmp-bad").exists()


def test_cli_merges_reward_models_as_warm(tiny_model_dir, tmp_path):
    from prefalign.rewards.model import RewardSpec, build_reward_model, load_reward_model

    torch.manual_seed(0)
    first = build_reward_model(str(tiny_model_dir), RewardSpec("decoder"))
    members = [first, _shifted(first, 0.2)]
    for i, m in enumerate(members):
        m.save(tmp_path / f"rm{i}")
    result = CliRunner().invoke(app, ["merge", "--model", str(tmp_path / "rm0"), "--model", str(tmp_path / "rm1"),
                                      "--out", str(tmp_path / "warm")])
    assert result.exit_code == 0, result.output
    warm = load_reward_model(tmp_path / "warm")
    torch.testing.assert_close(warm.head.weight, first.head.weight + 0.1)
