"""Chat and instruction examples: reading their JSONL records (every bad line named), rendering
them into token ids with a mask of the tokens that carry loss, and laying them out as training
sequences (one example per padded row, or packed end to end)."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmkube.runtime.data.errors import DataError

ROLES = ("system", "user", "assistant")
IGNORED = -100
"""The target id that carries no loss (PyTorch's cross-entropy default ignore_index)."""


@dataclass
class ParsedRecords:
    """One file's valid records (as canonical JSON documents) and what was wrong with the rest."""

    documents: list[str] = field(default_factory=list)
    invalid: int = 0
    problems: list[str] = field(default_factory=list)
    """The first few bad records, as "file line N: what is wrong"."""

    def bad(self, where: str, problem: str) -> None:
        self.invalid += 1
        if len(self.problems) < 5:
            self.problems.append(f"{where}: {problem}")


def _chat_problem(record: dict[str, Any]) -> str | None:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'needs "messages": a non-empty list of {"role", "content"} objects'
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"messages[{index}].role is {role!r}; use one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return f"messages[{index}].content must be a string"
    if not any(message["role"] == "assistant" for message in messages):
        return "has no assistant message: nothing to learn from"
    if messages[0]["role"] == "assistant":
        return "starts with an assistant message; a conversation starts with system or user"
    return None


def _instruction_problem(record: dict[str, Any]) -> str | None:
    for name in ("prompt", "completion"):
        if not isinstance(record.get(name), str):
            return f'needs a string "{name}"'
    if not record["completion"]:
        return '"completion" is empty: nothing to learn from'
    return None


def parse_records(data: bytes, file_format: str, name: str) -> ParsedRecords:
    """The records of one JSONL file of `chat` or `instruction` examples."""
    parsed = ParsedRecords()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        parsed.bad(name, f"not UTF-8 (first bad byte at offset {error.start})")
        return parsed
    check = _chat_problem if file_format == "chat" else _instruction_problem
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            parsed.bad(where, f"not valid JSON ({error.msg})")
            continue
        if not isinstance(record, dict):
            parsed.bad(where, "not a JSON object")
            continue
        problem = check(record)
        if problem:
            parsed.bad(where, problem)
            continue
        keep = ("messages",) if file_format == "chat" else ("prompt", "completion")
        parsed.documents.append(json.dumps({key: record[key] for key in keep}, sort_keys=True))
    return parsed


@dataclass
class Rendered:
    ids: list[int]
    loss: list[bool]
    """Whether each token is a target that carries loss."""


def _loss_spans_chat(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[range]]:
    """The conversation's text, and the character ranges of the assistant turns (with their
    end-of-turn marker) found by rendering the conversation up to each of them."""
    full: str = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before: str = tokenizer.apply_chat_template(
            messages[:index], tokenize=False, add_generation_prompt=True
        )
        through: str = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through)):
            raise DataError(
                "the model's chat template does not render a conversation as the sum of its "
                "turns, so the answers cannot be told from the prompts; set "
                "dataset.trainOnPrompt: true to learn whole conversations"
            )
        spans.append(range(len(before), len(through)))
    return full, spans


def render(tokenizer: Any, document: str, file_format: str, train_on_prompt: bool) -> Rendered:
    """One example (a document from `parse_records`) as token ids and their loss mask, with a
    transformers tokenizer."""
    record = json.loads(document)
    if file_format == "chat":
        text, spans = _loss_spans_chat(tokenizer, record["messages"])
        end: list[int] = []
    else:
        text = record["prompt"] + record["completion"]
        spans = [range(len(record["prompt"]), len(text))]
        end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    loss = [
        train_on_prompt or any(start in span for span in spans)
        for start, _ in encoded["offset_mapping"]
    ]
    return Rendered(ids=ids + end, loss=loss + [True] * len(end))


def chat_template_problem(tokenizer: Any, file_format: str) -> str | None:
    if file_format == "chat" and not tokenizer.chat_template:
        return (
            "dataset.format chat needs a tokenizer with a chat template, and this model's has "
            "none (no chat_template in tokenizer_config.json or chat_template.jinja); use "
            "dataset.format instruction or a model with a template"
        )
    return None


@dataclass
class Layout:
    """Token ids and their loss mask as one stream, and how the training data cuts it."""

    tokens: np.ndarray
    loss: np.ndarray
    row_tokens: int | None
    """Padded rows of this many tokens each; None: a packed stream cut anywhere."""
    truncated: int = 0
    """Examples cut at the row length."""
    dropped: int = 0
    """Examples left without a token that carries loss once cut."""


def lay_out(
    examples: Sequence[Rendered], *, context_length: int, packing: bool, pad_id: int, dtype: str
) -> Layout:
    """Examples end to end (`packing`), or each in its own row of contextLength + 1 tokens,
    padded with `pad_id` (padding carries no loss, and the model never attends back to it:
    rows are padded on the right)."""
    row = context_length + 1
    tokens: list[int] = []
    loss: list[bool] = []
    truncated = dropped = 0
    for example in examples:
        ids, mask = example.ids, example.loss
        if not packing:
            if len(ids) > row:
                truncated += 1
                ids, mask = ids[:row], mask[:row]
            # The first token is never a target; an example needs a later one that is.
            if not any(mask[1:]):
                dropped += 1
                continue
            ids = ids + [pad_id] * (row - len(ids))
            mask = mask + [False] * (row - len(mask))
        tokens.extend(ids)
        loss.extend(mask)
    return Layout(
        tokens=np.asarray(tokens, dtype=dtype),
        loss=np.asarray(loss, dtype=np.uint8),
        row_tokens=None if packing else row,
        truncated=truncated,
        dropped=dropped,
    )
