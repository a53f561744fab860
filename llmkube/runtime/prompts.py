"""Prompts as token ids and token ids as text, for evaluation samples and for serving.

llmkube's own tokenizer has no chat template: a chat is plain text a model trained on prose can
continue (`User: …` / `Assistant:` lines), and a turn ends where the next `User:` line would
start. A pretrained model's tokenizer renders chats with the model's own template and stops on
its end-of-turn ids; without a template it falls back to the plain text one.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenizers import Tokenizer

from llmkube.runtime.tokenizer import separator_ids, token_bytes

ChatTurn = tuple[str, str]
"""(role, text): role is system, developer, user or assistant."""

USER_PREFIX = "User: "
ASSISTANT_PREFIX = "Assistant:"
PLAIN_CHAT_STOP = "\nUser:"


def render_plain_chat(turns: Sequence[ChatTurn]) -> str:
    """System text first, then `User: …` / `Assistant: …` lines, ending with `Assistant:`."""
    lines = []
    for role, text in turns:
        if role in ("system", "developer"):
            lines.append(text + "\n")
        elif role == "user":
            lines.append(USER_PREFIX + text)
        else:
            lines.append(ASSISTANT_PREFIX + " " + text)
    return "\n".join(lines) + "\n" + ASSISTANT_PREFIX


class PromptCodec(Protocol):
    stop_ids: frozenset[int]
    """Tokens that end an answer (never shown)."""
    chat_stops: tuple[str, ...]
    """Text that ends a chat answer (cut before it)."""

    def encode(self, prompt: str) -> list[int]: ...

    def encode_chat(self, turns: Sequence[ChatTurn]) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_table(self) -> list[bytes]:
        """The bytes each token id stands for (special tokens: none)."""
        ...


@dataclass
class PlainPrompts:
    """llmkube's own tokenizer: the prompt as it is; an empty prompt is the document separator."""

    tokenizer: Tokenizer
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    chat_stops: tuple[str, ...] = (PLAIN_CHAT_STOP,)

    def encode(self, prompt: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(prompt).ids
        return ids or separator_ids(self.tokenizer)

    def encode_chat(self, turns: Sequence[ChatTurn]) -> list[int]:
        return self.encode(render_plain_chat(turns))

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids)
        return text

    def token_table(self) -> list[bytes]:
        return token_bytes(self.tokenizer)


@dataclass
class PretrainedPrompts:
    """A transformers tokenizer. `chat`: `encode` renders each prompt as a user turn (samples of
    a model fine-tuned on chats); serving leaves it off and calls `encode_chat` for chats.
    `stop_ids` adds to the tokenizer's eos (a model's generation_config.json often names its
    end-of-turn token there)."""

    tokenizer: Any
    chat: bool
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    chat_stops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tokenizer.eos_token_id is not None:
            self.stop_ids = self.stop_ids | {int(self.tokenizer.eos_token_id)}
        if not self.tokenizer.chat_template:
            self.chat_stops = (PLAIN_CHAT_STOP,)

    def encode(self, prompt: str) -> list[int]:
        if self.chat:
            return self.encode_chat([("user", prompt)])
        return self._ids(prompt)

    def encode_chat(self, turns: Sequence[ChatTurn]) -> list[int]:
        if not self.tokenizer.chat_template:
            return self._ids(render_plain_chat(turns))
        messages = [
            {"role": "system" if role == "developer" else role, "content": text}
            for role, text in turns
        ]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self._ids(text)

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids:
            return ids
        start = self.tokenizer.bos_token_id
        return [int(start if start is not None else self.tokenizer.eos_token_id)]

    def decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def token_table(self) -> list[bytes]:
        return token_bytes(self.tokenizer.backend_tokenizer)
