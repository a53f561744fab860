"""Dataset preparation: documents from object storage → cleaned, deduplicated, split, tokenized
shards in the cache; and reading those shards back as training batches."""
