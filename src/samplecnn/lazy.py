"""Lazy re-exports for packages (PEP 562): a package's public names resolve on first use.

    _EXPORTS = {"train": "run", "load_config": "config"}   # name -> submodule
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
    __all__ = sorted(_EXPORTS)

`from samplecnn.training import train` works as usual, but importing the package imports
none of its submodules: every `samplecnn` call builds the CLI's whole parser, and
decoding workers import `samplecnn.inference.batching`, neither of which may pay for
torch or Lightning. Standard library only.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package` whose names `exports` maps to submodules
    (relative to the package)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            setattr(sys.modules[package], name, value)  # the next lookup is a plain one
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
