"""Every `from_pretrained` in prefalign goes through here, so that a model folder or hub id runs no code of its
own and unpickles nothing unless the user asked for it.

- `trust_remote_code` is always passed explicitly (False unless the user's command line or config says
  True): left unset, transformers asks on stdin, and `echo y | ...` would run the folder's Python.
- Weights load from safetensors only (`use_safetensors=True`); a local folder with only pickle weights
  (`pytorch_model.bin`, `*.pt`) is refused with how to convert it, unless `allow_pickle` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class UnsafeFolderError(ValueError):
    """A folder would need its own code run or its pickles loaded, and the user did not allow it."""


def check_weights_are_safetensors(name_or_path: str, allow_pickle: bool = False) -> None:
    folder = Path(name_or_path)
    if allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeFolderError(
            f"{folder}: holds only pickle weights ({', '.join(pickles[:3])}), and loading a pickle can run code; "
            "convert them once where you trust the file (AutoModel.from_pretrained(DIR, use_safetensors=False)"
            ".save_pretrained(DIR)), or pass --allow-pickle (model.allow_pickle: true) if you trust this folder")


def check_exists(name_or_path: str) -> None:
    """A path that is not there is said to be one, not sent to the hub as a malformed repo id."""
    looks_local = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(f"model {name_or_path}: no such folder")


def _located(name_or_path: str, load: object, *args: object, **kwargs: object) -> object:
    """`load(...)`, with transformers' two confusing failures said plainly: a folder that needs its own code
    (refused unless trusted), and a name that is neither a folder here nor reachable on the hub."""
    check_exists(name_or_path)
    try:
        return load(*args, **kwargs)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise UnsafeFolderError(f"{name_or_path}: needs its own Python code (auto_map) to load; prefalign runs a "
                                "folder's code only when you pass --trust-remote-code (model.trust_remote_code: "
                                "true in your config)") from None
    except OSError as exc:
        if Path(name_or_path).exists():
            raise
        raise OSError(f"{name_or_path}: not a local folder, and the hub could not provide it ({str(exc).splitlines()[0]}); "
                      "download it where there is a network and pass its folder") from None


def load_pretrained_model(cls: type[T], name_or_path: str, *, trust_remote_code: bool = False,
                          allow_pickle: bool = False, **kwargs: object) -> T:
    """`cls.from_pretrained` for models (any transformers Auto class): safetensors only unless `allow_pickle`."""
    check_weights_are_safetensors(name_or_path, allow_pickle)
    return _located(name_or_path, cls.from_pretrained, name_or_path, trust_remote_code=trust_remote_code,
                                 use_safetensors=None if allow_pickle else True, **kwargs)


def load_pretrained_files(cls: type[T], name_or_path: str, *, trust_remote_code: bool = False, **kwargs: object) -> T:
    """`cls.from_pretrained` for tokenizers and configs, which carry no weights but may name code to run."""
    return _located(name_or_path, cls.from_pretrained, name_or_path, trust_remote_code=trust_remote_code, **kwargs)
