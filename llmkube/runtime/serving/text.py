"""Turning generated token ids into text deltas: never half a UTF-8 character, never the start
of what may become a stop sequence, and nothing from a stop sequence on. Every llmkube tokenizer
is byte-level, so decoding is a table lookup per token and an incremental UTF-8 decoder, which
holds back the first bytes of a character until the rest arrive."""

import codecs
from collections.abc import Sequence


class TextAssembler:
    def __init__(self, token_bytes: Sequence[bytes], stop: Sequence[str]) -> None:
        self.token_bytes = token_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = [s for s in stop if s]
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.text = ""
        self.sent = 0

    def add(self, token: int) -> bool:
        """Append a token; True when the text now contains a stop sequence (cut before it)."""
        piece = self.decoder.decode(self.token_bytes[token])
        if not piece:
            return False
        searched_from = max(0, len(self.text) - self.longest_stop)
        self.text += piece
        found = [index for stop in self.stop if (index := self.text.find(stop, searched_from)) >= 0]
        if found:
            self.text = self.text[: min(found)]
            return True
        return False

    def take(self) -> str:
        """The text that is safe to send now."""
        end = len(self.text)
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
        self.text += self.decoder.decode(b"", final=True)
        delta = self.text[self.sent :]
        self.sent = len(self.text)
        return delta
