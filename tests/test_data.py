"""Corpus loading (txt / jsonl / csv / parquet via datasets) and tokenization into length buckets."""

import json

import pytest

from trtbuild.data import load_corpus, tokenize_into_buckets
from trtbuild.errors import TrtbuildError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_loads_every_format(tmp_path):
    txt = write(tmp_path / "a.txt", "蚌埠住了😂\n\n物流很快\n")
    jsonl = write(tmp_path / "b.jsonl", json.dumps({"text": "yyds", "label": "positive"}, ensure_ascii=False) + "\n")
    csv = write(tmp_path / "c.csv", "text,label\n破防了,negative\n躺平,negative\n")
    import datasets

    parquet = str(tmp_path / "d.parquet")
    datasets.Dataset.from_dict({"text": ["绝绝子"], "label": ["positive"]}).to_parquet(parquet)
    corpus = load_corpus([txt, jsonl, csv, parquet])
    assert corpus.texts == ["蚌埠住了😂", "物流很快", "yyds", "破防了", "躺平", "绝绝子"]
    assert corpus.labels == [None, None, "positive", "negative", "negative", "positive"]
    assert corpus.sources[0] == txt and corpus.sources[-1] == parquet
    assert corpus.empty == 1


def test_text_column_option(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"content": "hello", "y": "positive"}\n')
    corpus = load_corpus([path], text_column="content", label_column="y")
    assert corpus.texts == ["hello"] and corpus.labels == ["positive"]


def test_missing_text_column(tmp_path):
    path = write(tmp_path / "a.csv", "body,label\nx,positive\n")
    with pytest.raises(TrtbuildError) as info:
        load_corpus([path])
    assert str(info.value) == ("corpus {} has no text column 'text' (columns: body, label); set data.text_column in "
                               "the config to the column that holds the texts".format(path))


def test_non_utf8_lines_skipped_with_line_numbers_or_fail(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("好评\n".encode("utf-8") + b"\xff\xfe bad\n" + "差评\n".encode("utf-8") + b"\xc3\x28\n")
    corpus = load_corpus([str(path)])
    assert corpus.texts == ["好评", "差评"]
    assert corpus.skipped_lines == {str(path): [2, 4]}
    with pytest.raises(TrtbuildError) as info:
        load_corpus([str(path)], on_bad_utf8="fail")
    assert str(info.value) == ("corpus {}: 2 line(s) are not UTF-8 (line 2, 4); fix the file or pass "
                               "--on-bad-utf8 skip".format(path))


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "\n\n", "corpus {} holds no texts; give a file with at least one non-empty text"),
    ("a.xml", "<x/>", "corpus {}: unknown format '.xml'; use .txt, .jsonl, .csv or .parquet"),
])
def test_bad_corpora(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(TrtbuildError) as info:
        load_corpus([path])
    assert str(info.value) == message.format(path)


def test_missing_file_and_no_file(tmp_path):
    with pytest.raises(TrtbuildError, match="not found"):
        load_corpus([str(tmp_path / "nope.txt")])
    with pytest.raises(TrtbuildError, match="no corpus given"):
        load_corpus([])


def test_buckets_and_truncation(tiny_checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)
    texts = ["a b", " ".join(["a"] * 10), " ".join(["a"] * 30), " ".join(["a"] * 100)]
    tok = tokenize_into_buckets(tokenizer, texts, [8, 16, 32])
    assert tok.lengths == [4, 12, 32, 102]
    assert tok.truncated == 1
    assert tok.buckets == {8: [0], 16: [1], 32: [2, 3]}
    assert len(tok.ids[3]) == 32 and tok.ids[3][-1] == tokenizer.sep_token_id
    batches = list(tok.batches(["input_ids", "attention_mask"], batch_size=1, pad_id=0))
    assert [(b.bucket, b.inputs["input_ids"].shape) for b in batches] == [(8, (1, 8)), (16, (1, 16)), (32, (1, 32)),
                                                                          (32, (1, 32))]
    assert batches[0].inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]
