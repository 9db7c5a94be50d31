"""Commands that use a trained model or run: sample it (generate), talk to it (chat), build its report, and
publish it on the Hugging Face Hub (push)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from prefalign.cli.app import PickleOpt, TrustCodeOpt, app, console, eval_prompts, friendly_errors


@app.command()
@friendly_errors
def generate(model: Annotated[str, typer.Argument(help="a model folder, hub id, toy, a run folder or one of its checkpoints")],
             prompt: Annotated[Optional[list[str]], typer.Option(help="a prompt (repeatable)")] = None,
             prompts: Annotated[Optional[str], typer.Option(help="or a file with a prompt field (or toy)")] = None,
             n: Annotated[int, typer.Option("--n", "-n", help="samples per prompt")] = 1, max_new_tokens: int = 128,
             temperature: Annotated[float, typer.Option(help="0: greedy")] = 1.0, seed: int = 0,
             chat: Annotated[bool, typer.Option(help="wrap each prompt as a user message in the tokenizer's chat template, "
                                                     "as conversational data trains; default: plain text, as the "
                                                     "standard format trains")] = False,
             out: Annotated[Optional[Path], typer.Option(help="also write {prompt, completion} JSONL here")] = None,
             trust_remote_code: TrustCodeOpt = False, allow_pickle: PickleOpt = False) -> None:
    """Sample completions from any model, run or checkpoint, each prompt tokenized as training tokenizes it
    (with --chat: the chat template and its generation prompt)."""
    from prefalign.atomic_files import write_text_atomic
    from prefalign.decoding.sampling import complete_prompts
    from prefalign.models.loading import inference_tokenizer, load_for_inference

    texts = list(prompt or []) + (eval_prompts(prompts, 10**9, seed) if prompts else [])
    if not texts:
        raise ValueError("give --prompt TEXT (repeatable) or --prompts FILE")
    tokenizer = inference_tokenizer(model, trust_remote_code)
    policy = load_for_inference(model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    asked = [[{"role": "user", "content": t}] if chat else t for t in texts for _ in range(n)]
    completions = complete_prompts(policy, tokenizer, asked, max_new_tokens, temperature, seed)
    results = [{"prompt": texts[i // n], "completion": c} for i, c in enumerate(completions)]
    for r in results:
        console.print(f"-- {r['prompt']}\n{r['completion']}", markup=False, highlight=False)
    if out:
        write_text_atomic(out, "".join(json.dumps(r) + "\n" for r in results))
        console.print(f"wrote {out}", markup=False, highlight=False)


@app.command()
@friendly_errors
def chat(model: Annotated[str, typer.Argument(help="a model folder, hub id, toy, a run folder or one of its checkpoints")],
         max_new_tokens: int = 256, temperature: Annotated[float, typer.Option(help="0: greedy")] = 0.7, seed: int = 0,
         system: Annotated[Optional[str], typer.Option(help="a system message opening the conversation")] = None,
         trust_remote_code: TrustCodeOpt = False, allow_pickle: PickleOpt = False) -> None:
    """Talk to a model through its chat template, one turn per line of input; an empty line or end of input
    ends the conversation."""
    from prefalign.decoding.sampling import complete_prompts
    from prefalign.models.loading import inference_tokenizer, load_for_inference

    tokenizer = inference_tokenizer(model, trust_remote_code)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"{model}: its tokenizer has no chat template; use `prefalign generate` for plain prompts")
    policy = load_for_inference(model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    messages = [{"role": "system", "content": system}] if system else []
    for turn in iter(lambda: sys.stdin.readline(), ""):
        if not turn.strip():
            break
        messages.append({"role": "user", "content": turn.strip()})
        (reply,) = complete_prompts(policy, tokenizer, [messages], max_new_tokens, temperature, seed + len(messages))
        messages.append({"role": "assistant", "content": reply.strip()})
        console.print(f"assistant: {reply.strip()}", markup=False, highlight=False)


@app.command()
@friendly_errors
def push(run: Annotated[Path, typer.Argument(help="a finished run folder")],
         repo_id: Annotated[str, typer.Argument(help="the hub repo, e.g. me/my-dpo-model")],
         what: Annotated[Optional[str], typer.Option(help="model, adapter or reward_model (default: the adapter if "
                                                          "there is one, else what the run holds)")] = None,
         private: bool = False,
         dry_run: Annotated[bool, typer.Option(help="write the model card and list the files; upload nothing")] = False) -> None:
    """Publish a run's model, adapter or reward model on the Hugging Face Hub, with a generated model card
    (base model, losses, data, settings, evaluation). Log in first: `hf auth login` or HF_TOKEN."""
    from prefalign.training.hub import prepare_upload
    from prefalign.training.hub import push as upload

    prepared = prepare_upload(run, repo_id, what)
    console.print(f"{prepared.kind} from {prepared.folder} -> {repo_id}: {', '.join(prepared.files)}", markup=False,
                  highlight=False)
    if not dry_run:
        console.print(f"uploaded: {upload(prepared, private=private)}", markup=False, highlight=False)


@app.command()
@friendly_errors
def report(run: Annotated[Path, typer.Argument(help="a run folder (trainer.output_dir of any recipe)")]) -> None:
    """Write RUN/report.html: the run's settings, summary, last metrics and training curves."""
    from prefalign.evaluation.report import run_report

    console.print(f"wrote {run_report(run)}", markup=False, highlight=False)

