"""A real text corpus every Python installation carries, for the quickstart and tests: the
language reference topics from `pydoc_data` and the docstrings of standard-library modules."""

import importlib
import inspect
import pkgutil
import pydoc_data.topics
import warnings
from pathlib import Path

# Pure-Python standard-library packages whose import has no side effects worth worrying about.
SKIPPED = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3"}


def _docstrings(limit_chars: int) -> list[str]:
    texts: list[str] = []
    used = 0
    for module_info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        name = module_info.name
        if name.startswith("_") or name in SKIPPED or not module_info.module_finder:
            continue
        location = getattr(module_info.module_finder, "path", "")
        if "site-packages" in str(location) or "dist-packages" in str(location):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:
            continue
        own = [
            obj
            for _, obj in inspect.getmembers(module, callable)
            if getattr(obj, "__module__", None) == name
        ]
        for obj in (module, *own):
            doc = inspect.getdoc(obj)
            # Short docstrings are mostly signatures; the long ones are prose.
            if doc and (obj is module or len(doc) > 200):
                texts.append(doc)
                used += len(doc)
            if used >= limit_chars:
                return texts
    return texts


def write_sample(destination: Path, *, docstring_chars: int = 1_000_000) -> list[Path]:
    """Write the corpus as text files (documents separated by blank lines)."""
    destination.mkdir(parents=True, exist_ok=True)
    topics = destination / "pydoc-topics.txt"
    topics.write_text("\n\n".join(pydoc_data.topics.topics.values()), encoding="utf-8")
    written = [topics]
    if docstring_chars:
        docstrings = destination / "stdlib-docstrings.txt"
        docstrings.write_text("\n\n".join(_docstrings(docstring_chars)), encoding="utf-8")
        written.append(docstrings)
    return written
