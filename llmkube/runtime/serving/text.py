"""Turning generated token ids into text deltas: never half a UTF-8 character, never the start
of what may become a stop sequence, and nothing from a stop sequence on."""

from collections.abc import Sequence

from tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"


class TextAssembler:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0

    def add(self, token: int) -> bool:
        """Append a token; True when the text now contains a stop sequence (cut before it)."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids)
        found = [
            index
            for stop in self.stop
            if (index := self.text.find(stop, max(0, self.sent - len(stop)))) >= 0
        ]
        if found:
            self.text = self.text[: min(found)]
            return True
        return False

    def take(self) -> str:
        """The text that is safe to send now."""
        end = len(self.text)
        if self.text.endswith(_INCOMPLETE):
            end -= 1
        for stop in self.stop:
            for size in range(min(len(stop) - 1, end), 0, -1):
                if self.text[:end].endswith(stop[:size]):
                    end -= size
                    break
        if end <= self.sent:
            return ""
        delta = self.text[self.sent : end]
        self.sent = end
        return delta

    def flush(self) -> str:
        """Everything not sent yet (the request is over)."""
        delta = self.text[self.sent :]
        self.sent = len(self.text)
        return delta
