"""Tokenizers, all stored as one Hugging Face `tokenizer.json`: byte-level BPE trained on the
dataset, or the 256 plain byte values (byte-level BPE without merges)."""

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmkube.api.training import TokenizerSpec

END_OF_TEXT = "<|endoftext|>"
# Documents past this many characters are enough to learn merges from; the rest only costs time.
BPE_TRAINING_CHARS = 64 * 1024 * 1024


def _byte_level(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def byte_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda char: _byte_of(char))
    vocab = {char: index for index, char in enumerate(alphabet)}
    return _byte_level(models.BPE(vocab=vocab, merges=[]))


def _byte_table() -> dict[str, int]:
    # GPT-2's byte-to-unicode table: printable bytes stand for themselves, the rest for 256+.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(byte): byte for byte in printable}
    others = [byte for byte in range(256) if byte not in table.values()]
    table.update({chr(256 + index): byte for index, byte in enumerate(others)})
    return table


_BYTE_OF = _byte_table()


def _byte_of(char: str) -> int:
    return _BYTE_OF[char]


def _decodes_bytes(tokenizer: Tokenizer) -> bool:
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    parts = decoder.get("decoders") or [decoder]
    return any(part.get("type") == "ByteLevel" for part in parts)


def _sentencepiece_bytes(token: str) -> bytes:
    """A SentencePiece-style token: `<0xNN>` is one raw byte, `▁` a space."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("\u2581", " ").encode()


def token_bytes(tokenizer: Tokenizer) -> list[bytes]:
    """The bytes each token id stands for (special tokens stand for nothing): what lets serving
    decode one token at a time without calling the tokenizer. Byte-level vocabularies (llmkube's,
    GPT-2's, Qwen2's, SmolLM2's, Llama 3's) map characters back to bytes; SentencePiece ones
    (Llama 2's) spell spaces as `▁` and rare bytes as `<0xNN>`."""
    specials = {
        token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special
    }
    byte_level = _decodes_bytes(tokenizer)
    table = []
    for index in range(tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(index)
        if token is None or token in specials:
            table.append(b"")
        elif byte_level:
            table.append(bytes(_BYTE_OF[char] for char in token))
        else:
            table.append(_sentencepiece_bytes(token))
    return table


def train_bpe(documents: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_bounded(documents, BPE_TRAINING_CHARS), trainer=trainer)
    return tokenizer


def _bounded(documents: Iterable[str], max_chars: int) -> Iterable[str]:
    used = 0
    for document in documents:
        yield document
        used += len(document)
        if used >= max_chars:
            return


def build_tokenizer(spec: TokenizerSpec, documents: Iterable[str]) -> Tokenizer:
    if spec.type == "byte":
        return byte_tokenizer()
    return train_bpe(documents, spec.resolved_vocab_size())


def separator_ids(tokenizer: Tokenizer) -> list[int]:
    """Tokens put between documents: the end-of-text token, or a blank line for bytes."""
    special = tokenizer.token_to_id(END_OF_TEXT)
    if special is not None:
        return [special]
    return tokenizer.encode("\n\n").ids
