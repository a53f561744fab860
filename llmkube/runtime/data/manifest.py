"""`<cache>/tokens/<hash>/manifest.json`: what a finished preparation wrote. Written last, so a
cache folder without it is an interrupted preparation and is redone."""

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"


def loss_shard(name: str) -> str:
    """The file beside a token shard holding its loss mask (one uint8 per token)."""
    return name + ".loss"


class Shard(BaseModel):
    name: str
    tokens: int


class PreparationStats(BaseModel):
    files: int
    bytes: int
    documents: int
    duplicates: int
    skipped: dict[str, int] = Field(default_factory=dict)
    train_tokens: int
    validation_tokens: int
    seconds: float


class DataManifest(BaseModel):
    dtype: str
    """numpy dtype of the token ids in every shard."""
    vocab_size: int
    train: list[Shard]
    validation: list[Shard]
    validation_from: str
    """documents (held out by content hash), tokens (the tail of the stream) or source."""
    stats: PreparationStats
    masked: bool = False
    """Whether every shard has a loss mask beside it (chat and instruction examples)."""
    row_tokens: int | None = None
    """Set when the shards hold padded rows of this many tokens, one example each."""
    examples: int | None = None
    """Examples prepared (chat and instruction data)."""
