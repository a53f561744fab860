"""`<cache>/tokens/<hash>/manifest.json`: what a finished preparation wrote. Written last, so a
cache folder without it is an interrupted preparation and is redone."""

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"


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
