"""`prefalign budget`: one label budget, SFT first and preference optimisation after (Raghavendra et al. 2025,
"Balancing the Budget: Understanding Trade-offs Between Supervised and Preference-Based Finetuning").

n_sft = round(labels x sft_fraction) demonstrations train SFT from the configured model; the other
labels - n_sft preference rows train the preference losses from the SFT model (the reference is that model
as it starts, unless configured). Each stage reads the first rows of its file (`data.limit`), so a budget
sweep compares nested subsets of the same data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from prefalign.config.schema import BudgetConfig
from prefalign.training.preference import PreferenceRun, train_preference
from prefalign.training.sft_recipe import SFTRun, train_sft_run


@dataclass
class BudgetRun:
    sft_labels: int
    preference_labels: int
    sft: SFTRun | None
    preference: PreferenceRun | None

    @property
    def model(self) -> Path:
        last = self.preference or self.sft
        return last.outputs["model"]


def split_budget(labels: int, sft_fraction: float) -> tuple[int, int]:
    n_sft = round(labels * sft_fraction)
    return n_sft, labels - n_sft


def run_budget(cfg: BudgetConfig, console: Console | None = None, overwrite: bool = False) -> BudgetRun:
    n_sft, n_pref = split_budget(cfg.labels, cfg.sft_fraction)
    root = Path(cfg.output_dir)
    sft_run = pref_run = None
    model = cfg.preference.model
    if n_sft:
        sft = cfg.sft.model_copy(update={"data": cfg.sft.data.model_copy(update={"limit": n_sft}),
                                         "trainer": cfg.sft.trainer.model_copy(update={"output_dir": str(root / "sft")})})
        sft_run = train_sft_run(sft, console=console, overwrite=overwrite)
        model = cfg.preference.model.model_copy(update={"name_or_path": str(sft_run.outputs["model"])})
    if n_pref:
        pref = cfg.preference.model_copy(update={
            "model": model, "data": cfg.preference.data.model_copy(update={"limit": n_pref}),
            "trainer": cfg.preference.trainer.model_copy(update={"output_dir": str(root / "preference")})})
        pref_run = train_preference(pref, console=console, overwrite=overwrite)
    return BudgetRun(n_sft, n_pref, sft_run, pref_run)
