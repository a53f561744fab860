"""Prompts as token ids and token ids as text, for evaluation samples: plain text with llmkube's
own tokenizer; with a pretrained model's tokenizer, rendered as a user turn of its chat template
when the model was fine-tuned on chat data."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenizers import Tokenizer


class PromptCodec(Protocol):
    stop_ids: frozenset[int]

    def encode(self, prompt: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class PlainPrompts:
    """llmkube's own tokenizer: the prompt as it is, generation stops at the length limit."""

    tokenizer: Tokenizer
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    def encode(self, prompt: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(prompt).ids
        return ids

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids)
        return text


@dataclass
class PretrainedPrompts:
    """A transformers tokenizer; `chat` renders each prompt as a user turn."""

    tokenizer: Any
    chat: bool
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.tokenizer.eos_token_id is not None:
            self.stop_ids = frozenset({int(self.tokenizer.eos_token_id)})

    def encode(self, prompt: str) -> list[int]:
        if self.chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text
