"""Dataset transforms: parsing and cleaning files, the tokenizers, and batch addressing."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmkube.api.training import Preprocessing, TokenizerSpec
from llmkube.runtime.data.documents import FileDocuments, clean, file_documents
from llmkube.runtime.data.errors import DataError
from llmkube.runtime.data.shards import Sequences, TrainingBatches
from llmkube.runtime.data.stages import (
    check_split_sizes,
    hold_out_tail,
    merge_documents,
    split_documents,
)
from llmkube.runtime.tokenizer import (
    END_OF_TEXT,
    build_tokenizer,
    byte_tokenizer,
    separator_ids,
    token_bytes,
)

DEFAULTS = Preprocessing()


def test_text_files_split_on_blank_lines() -> None:
    data = b"First paragraph\nstill first.\n\n  \n\nSecond one.\r\n\r\nThird.\n"
    result = file_documents(data, "text", "text", DEFAULTS)
    assert result.documents == ["First paragraph\nstill first.", "Second one.", "Third."]
    assert result.bytes_read == len(data)


def test_cleaning_normalizes_and_strips_control_characters() -> None:
    decomposed = "cafe\u0301\x00\x07 tab\there\x9f"
    assert clean(decomposed, DEFAULTS) == "café tab\there"
    assert clean("ﬁ", Preprocessing(normalize_unicode="NFKC")) == "fi"
    assert clean("e\u0301", Preprocessing(normalize_unicode="none")) == "e\u0301"


def test_short_documents_are_counted_as_skipped() -> None:
    result = file_documents(b"ok document\n\nno", "text", "text", Preprocessing(min_chars=5))
    assert result.documents == ["ok document"]
    assert result.skipped == {"shorter than minChars": 1}


def test_non_utf8_files_are_skipped_with_the_offset() -> None:
    result = file_documents(b"abc\xff", "text", "text", DEFAULTS)
    assert result.documents == []
    assert result.skipped == {"file not UTF-8 (first bad byte at offset 3)": 1}


def test_jsonl_skips_bad_lines_and_missing_fields_with_counts() -> None:
    lines = [json.dumps({"text": "kept"}), "{broken", json.dumps({"body": "x"}), "[1, 2]", ""]
    result = file_documents("\n".join(lines).encode(), "jsonl", "text", DEFAULTS)
    assert result.documents == ["kept"]
    assert result.skipped == {
        "line not valid JSON": 1,
        "record without a string field 'text'": 2,
    }


def test_parquet_reads_the_text_field() -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"content": ["one", None, "two"], "id": [1, 2, 3]}), buffer)
    result = file_documents(buffer.getvalue(), "parquet", "content", DEFAULTS)
    assert result.documents == ["one", "two"]
    assert result.skipped == {"row whose 'content' is not a string": 1}
    missing = file_documents(buffer.getvalue(), "parquet", "text", DEFAULTS)
    assert missing.skipped == {"Parquet file without column 'text' (has ['content', 'id'])": 1}


def test_byte_tokenizer_is_the_identity_on_bytes() -> None:
    tokenizer = byte_tokenizer()
    text = "héllo\n\x00 wörld"
    assert tokenizer.encode(text).ids == list(text.encode())
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert tokenizer.get_vocab_size() == 256
    assert separator_ids(tokenizer) == [10, 10]


def test_bpe_learns_the_requested_vocabulary() -> None:
    documents = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(300)]
    tokenizer = build_tokenizer(TokenizerSpec(type="bpe", vocab_size=300), documents)
    assert tokenizer.get_vocab_size() == 300
    assert separator_ids(tokenizer) == [tokenizer.token_to_id(END_OF_TEXT)]
    encoded = tokenizer.encode("the quick brown fox")
    assert len(encoded.ids) < len("the quick brown fox")
    assert tokenizer.decode(encoded.ids) == "the quick brown fox"


def batches(workers: int = 2) -> TrainingBatches:
    stream = np.arange(10 * 4 + 1, dtype=np.uint16)  # 10 sequences of 4 (+1) tokens
    return TrainingBatches(
        Sequences([stream], context_length=4), batch_size=2, accumulation=2, workers=workers, seed=3
    )


def test_sequences_are_non_overlapping_windows() -> None:
    inputs, targets = batches().sequences.batch([0, 9])
    assert inputs.tolist() == [[0, 1, 2, 3], [36, 37, 38, 39]]
    assert targets.tolist() == [[1, 2, 3, 4], [37, 38, 39, 40]]


def test_workers_get_disjoint_samples_and_a_step_is_reproducible() -> None:
    plan = batches()
    firsts = []
    for micro in range(2):
        for rank in range(2):
            firsts.extend(plan.batch(step=0, micro=micro, rank=rank)[0][:, 0].tolist())
    assert len(firsts) == len(set(firsts)) == 8
    again = batches()
    assert again.batch(step=1, micro=1, rank=1)[0].tolist() == plan.batch(1, 1, 1)[0].tolist()


def test_an_epoch_visits_every_sequence_once() -> None:
    plan = batches(workers=1)  # 4 samples per step; 10 sequences -> 2.5 steps per epoch
    seen = [
        first
        for step in range(5)
        for micro in range(2)
        for first in plan.batch(step, micro, 0)[0][:, 0].tolist()
    ]
    assert sorted(seen[:10]) == list(range(0, 40, 4))
    assert sorted(seen[10:20]) == list(range(0, 40, 4))
    assert seen[:10] != seen[10:20]
    assert plan.epoch_at(5) == pytest.approx(2.0)


def test_token_bytes_decode_like_the_tokenizer() -> None:
    documents = [f"naïve café {i} — “quoted” text" for i in range(200)]
    tokenizer = build_tokenizer(TokenizerSpec(type="bpe", vocab_size=400), documents)
    table = token_bytes(tokenizer)
    ids = tokenizer.encode(documents[7] + END_OF_TEXT).ids
    assert b"".join(table[i] for i in ids).decode() == tokenizer.decode(ids)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    assert end_of_text is not None
    assert table[end_of_text] == b""
    assert token_bytes(byte_tokenizer())[ord("A")] == b"A"


def test_merging_files_sums_what_was_skipped_and_drops_exact_duplicates() -> None:
    first = FileDocuments(documents=["a b", "c d", "a b"], skipped={"not UTF-8": 1}, bytes_read=10)
    second = FileDocuments(documents=["c d", "e f"], skipped={"not UTF-8": 2, "short": 1})
    second.bytes_read = 5
    kept = merge_documents([first, second], dedupe=True)
    assert kept.documents == ["a b", "c d", "e f"]
    assert kept.duplicates == 2
    assert kept.skipped == {"not UTF-8": 3, "short": 1}
    assert kept.bytes_read == 15
    assert merge_documents([first, second], dedupe=False).documents == [
        "a b",
        "c d",
        "a b",
        "c d",
        "e f",
    ]


def test_validation_documents_are_chosen_by_their_text_alone() -> None:
    documents = [f"document number {i}" for i in range(2000)]
    train, validation = split_documents(documents, 0.1)
    assert sorted(train + validation) == sorted(documents)
    assert 100 < len(validation) < 300
    _, again_validation = split_documents(list(reversed(documents)), 0.1)
    assert set(again_validation) == set(validation)
    _, default = split_documents(documents, None)  # 5% unless said otherwise
    assert 40 < len(default) < 170


def test_too_little_held_out_text_takes_the_end_of_the_stream() -> None:
    train, validation = np.arange(1000), np.arange(1000, 1010)
    new_train, new_validation = hold_out_tail(train, validation, context=64, fraction=None)
    assert len(new_validation) == 65  # one sequence: more than 5% of 1010 tokens
    assert np.array_equal(np.concatenate([new_train, new_validation]), np.arange(1010))
    _, larger = hold_out_tail(train, validation, context=8, fraction=0.2)
    assert len(larger) == 202


def test_a_split_shorter_than_one_sequence_names_the_fix() -> None:
    check_split_sizes({"training": np.zeros(65), "validation": np.zeros(65)}, 64, "s3://b/d/")
    with pytest.raises(DataError, match=r"validation split of s3://b/d/ has 64 tokens.*lower"):
        check_split_sizes({"training": np.zeros(65), "validation": np.zeros(64)}, 64, "s3://b/d/")
