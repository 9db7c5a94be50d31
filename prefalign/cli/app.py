"""What every `prefalign` command shares: the typer apps, the consoles, common options, and the error
handling that turns expected failures (bad config, bad data, divergence) into one clear message and exit
status 2, never a traceback. The commands live in cli/main.py and cli/models.py."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from prefalign.config.loading import ConfigError

if TYPE_CHECKING:  # the recipes import torch; the CLI loads them only inside the commands
    from prefalign.online.recipe import OnlineRun
    from prefalign.training.preference import PreferenceRun
    from prefalign.training.sft_recipe import SFTRun

# rich_markup_mode=None: help text is shown as written; formulas and "{section: [subsets]}" are not markup.
app = typer.Typer(help="Align language models with preferences, end to end.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)
data_app = typer.Typer(help="Read, validate and inspect preference data.", no_args_is_help=True)
toy_app = typer.Typer(help="The bundled toy task: base model and preference data.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configurations.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate policies and annotations: win rates, length-controlled win rates.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(toy_app, name="toy")
app.add_typer(config_app, name="config")
app.add_typer(eval_app, name="eval")
rm_app = typer.Typer(help="Reward models: train, score pairs, evaluate (also a DPO policy's implicit reward).",
                     no_args_is_help=True)
app.add_typer(rm_app, name="rm")
judges_app = typer.Typer(help="Validate automatic judges against human grades (EvalGen).", no_args_is_help=True)
app.add_typer(judges_app, name="judges")
value_app = typer.Typer(help="Value models for decoding (Controlled Decoding, VAS): train on a model's rollouts.",
                        no_args_is_help=True)
app.add_typer(value_app, name="value")
# soft_wrap: a line longer than the terminal (or than 80 columns in a log file) is never cut into pieces.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    help="Overrides as key.path=value, e.g. trainer.lr=1e-6 loss.0.beta=0.2 model.name_or_path=gpt2",
    show_default=False)]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="run the Python a model folder or hub repo ships (auto_map); only for sources you "
    "trust. A run folder's own config never turns this on")]
PickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="load pickle weights (pytorch_model.bin) where a folder has no safetensors; unpickling "
    "can run code, so only for folders you trust")]
ResumeOpt = Annotated[bool, typer.Option(help="continue from the newest checkpoint in trainer.output_dir")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace the run already in trainer.output_dir (its checkpoints, "
                                                 "metrics and model)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; keys map to the schema "
                                                   "(see `prefalign config show`)")]


def _quiet_libraries() -> None:
    """No download bars or advisory logs from transformers; through its environment variables, so that a
    command that never loads a model never imports it (and pays its seconds of start-up)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # already imported (by an earlier command in this process)
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()


SHOW_TRACEBACKS = {"on": False}


def user_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """What bad input raises: each becomes one line and exit code 2 (`prefalign --debug` shows the traceback)."""
    import csv

    import jinja2
    import yaml

    from prefalign.data.errors import DataError
    from prefalign.extras import MissingExtraError
    from prefalign.training.errors import TrainingDiverged

    ours = (ConfigError, DataError, TrainingDiverged, MissingExtraError, OSError, ValueError, RecursionError)
    return ours, (yaml.YAMLError, csv.Error, jinja2.TemplateError)  # the second: library messages, named by type


def friendly_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        ours, libraries = user_errors()
        try:
            _quiet_libraries()
            return fn(*args, **kwargs)
        except ours + libraries as exc:
            if SHOW_TRACEBACKS["on"]:
                raise
            from rich.markup import escape

            text = f"{type(exc).__name__}: {exc}" if isinstance(exc, libraries) else _one_line(exc)
            if isinstance(exc, RecursionError):
                text = "input nested too deeply to read (RecursionError)"
            err_console.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _one_line(exc: BaseException) -> str:
    """Our errors as they are; a pydantic ValidationError (an option checked against a schema) without its
    URL and type tags."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                     for e in exc.errors())


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        console.print(f"prefalign {version('prefalign')}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show the full traceback of an error")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="print the version and exit")] = False) -> None:
    """Align language models with preferences, end to end."""
    SHOW_TRACEBACKS["on"] = debug  # set on every invocation, so one --debug call does not leak into the next


class ListsLosses(typer.core.TyperCommand):
    """A command whose --help ends with every registered loss, read from the loss catalog (no torch)."""

    def format_help(self, ctx: object, formatter: object) -> None:
        from prefalign.losses.catalog import read_catalog

        names = [entry["name"] for entry in read_catalog()]
        written = self.help
        self.help = f"{written}\n\nLosses ({len(names)}; `prefalign losses` shows their parameters): " + \
            ", ".join(names)
        try:
            super().format_help(ctx, formatter)
        finally:
            self.help = written


def print_done(run: PreferenceRun | OnlineRun | SFTRun) -> None:
    """One line on the main process: steps, time and where the outputs went."""
    if not run.main:
        return
    loop = run.loop
    skipped = (f"; {loop.skipped_steps} of {loop.steps} steps skipped (a non-finite loss, gradient or update: "
               "see metrics.jsonl)" if loop.skipped_steps else "")
    console.print(f"done: {loop.steps} steps in {loop.seconds:.0f}s{skipped}; "
                  + ", ".join(f"{k} -> {v}" for k, v in run.outputs.items()))


def eval_prompts(source: str, n: int, seed: int) -> list[str]:
    """`toy`: n held-out toy prompts; otherwise a file or dataset with a string `prompt` field."""
    import random

    from prefalign.data.prompts import read_prompts

    if source == "toy":
        from prefalign.toy.world import split_prompts

        held_out = split_prompts()[1]
        return random.Random(seed).sample(held_out, min(n, len(held_out)))
    return read_prompts(source)[:n]
