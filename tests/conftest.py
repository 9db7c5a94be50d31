"""Shared fixtures: a tiny local tokenizer and model (no downloads), and small data files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# A test that runs a folder's own code (with the flag) must not leave it in the user's module cache.
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="prefalign-hf-modules-")


@pytest.fixture(autouse=True)
def _private_reference_cache(tmp_path, monkeypatch):
    """Each test gets its own reference log-prob cache, never the user's."""
    monkeypatch.setenv("PREFALIGN_CACHE", str(tmp_path / "cache"))
# Under `pytest -n 2` (scripts/test.sh) each worker, and every process it starts, gets one thread: two workers
# with two threads each on two cores spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def toy_tokenizer():
    from prefalign.toy.tokenizer import build_toy_tokenizer

    return build_toy_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A randomly initialised 2-layer Llama saved with its tokenizer, loadable by from_pretrained."""
    from prefalign.toy.model import new_toy_model

    torch.manual_seed(0)
    model = new_toy_model(toy_tokenizer, hidden=32, layers=2, heads=2, intermediate=64)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return path


PAIRS = [
    {"prompt": "review the red lamp .", "chosen": " the lamp is great .", "rejected": " the lamp is awful ."},
    {"prompt": "what is 2 plus 3 ?", "chosen": " the answer is 5 .", "rejected": " the answer is 7 ."},
    {"prompt": "list 2 fruits .", "chosen": " apple , pear .", "rejected": " cat , dog ."},
    {"prompt": "review the blue chair .", "chosen": " the chair is sturdy and lovely .", "rejected": " it feels flimsy ."},
    {"prompt": "describe the old mug .", "chosen": " the mug looks beautiful .", "rejected": " the mug looks ugly . the mug looks ugly ."},
    {"prompt": "what is 4 minus 1 ?", "chosen": " the answer is 3 .", "rejected": " it is 5 ."},
    {"prompt": "name 3 animals .", "chosen": " cat , dog , horse .", "rejected": " apple , tea ."},
    {"prompt": "review the new bike .", "chosen": " overall it is perfect .", "rejected": " overall it is broken ."},
]


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def assert_report(page: str, images: int, headings: list[str]) -> None:
    """An HTML report holds every figure (as embedded images), every section heading, and no raw rich markup,
    raw metric keys or unrounded floats in its summary table."""
    import re

    assert page.count("<img") == images, page.count("<img")
    for heading in headings:
        assert f"<h2>{heading}</h2>" in page, heading
    assert not re.search(r"\[/?(bold|red|green|yellow|dim)", page)
    summary = page.split("<h2>Summary</h2>", 1)[-1].split("<h2>", 1)[0]
    assert "eval/" not in summary
    digits = [f.replace(".", "").lstrip("0") for f in re.findall(r"\d+\.\d+", summary)]
    assert all(len(d) <= 5 for d in digits), digits  # rounded to 4 significant figures
