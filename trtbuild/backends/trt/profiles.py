"""Optimization profiles: which (batch, sequence) shapes an engine takes, and fitting a batch to them.

Pure Python + numpy (no TensorRT), so it is tested on the CPU. A profile is a `ProfileConfig`
(min / opt / max as [batch, sequence]); the manifest records them per engine.
"""

import numpy as np

from trtbuild.config import ProfileConfig
from trtbuild.errors import TrtbuildError

# the longest text of the variable-length network: the attention plugin takes 512, but TensorRT 8.6's embedding
# plugin version 2 launches one block per position up to 384 only (embLayerNormVarSeqlenPlugin.cpp enqueue)
VARLEN_MAX_SEQUENCE = 384


def bucket_profiles(buckets, max_batch, opt_batch=None, fixed_sequence=False, static_batches=()):
    """One profile per bucket: batch 1..max_batch, opt at the bucket's length and `opt_batch` (default
    max_batch); sequences (previous bucket, bucket], or exactly the bucket with `fixed_sequence` (the
    runner pads a batch to its bucket; TensorRT 8.6 runs a fixed sequence much faster, docs/results/perf-log.md).
    `static_batches`: before each bucket's profile, a fully static (n, bucket) profile per listed batch size n,
    which the runner picks for exactly that batch (a static 64 x 128 FP16 profile ran 3.93 ms vs 4.70 ms)."""
    opt_batch = min(opt_batch or max_batch, max_batch)
    out, low = [], 1
    for b in sorted(buckets):
        for n in sorted(set(static_batches)):
            if 1 <= n <= max_batch:
                out.append(ProfileConfig(min=(n, b), opt=(n, b), max=(n, b)))
        out.append(ProfileConfig(min=(1, b if fixed_sequence else low), opt=(opt_batch, b), max=(max_batch, b)))
        low = b + 1
    return out


def profiles_from_lengths(lengths, max_length, max_batch, quantiles=(0.5, 0.8, 0.95, 1.0), multiple=8,
                          fixed_sequence=False):
    """Buckets from a corpus's token-length histogram: upper edges at the given quantiles, rounded up
    to a multiple of 8 and capped at max_length; then one profile per bucket."""
    if not lengths:
        raise TrtbuildError("no lengths to derive profiles from; pass a non-empty corpus to --profiles-from")
    arr = np.minimum(np.asarray(lengths), max_length)
    edges = []
    for q in quantiles:
        edge = int(np.ceil(np.quantile(arr, q) / multiple) * multiple)
        edge = max(multiple, min(edge, max_length))
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges, bucket_profiles(edges, max_batch, fixed_sequence=fixed_sequence)


def profiles_from_corpus(config, corpus_path, progress=None):
    """`--profiles-from CORPUS`: bucket profiles from the token lengths of a corpus (needs the exported tokenizer,
    so the CPU side). Returns the profiles."""
    from trtbuild.data import load_corpus, tokenize_into_buckets
    from trtbuild.workdir import WorkDir, check_export

    record = check_export(config.workdir)
    corpus = load_corpus([corpus_path], config.data.text_column, config.data.label_column)
    tok = tokenize_into_buckets(WorkDir(config.workdir).load_tokenizer(), corpus.texts, [record["max_length"]])
    edges, profiles = profiles_from_lengths(tok.lengths, record["max_length"], config.build.max_batch,
                                            fixed_sequence=config.build.fixed_sequence)
    if progress is not None:
        progress("profiles from {} ({} texts): buckets {}".format(corpus_path, len(corpus), edges))
    return profiles


def config_profiles(config, max_length):
    """The profiles `trtbuild build` gives an engine of this config: build.profiles verbatim, one per usable
    data bucket, or the one variable-length profile."""
    buckets = config.data.usable_buckets(max_length)
    if config.build.varlen:
        return [varlen_profile(config, buckets)]
    if config.build.profiles:
        return list(config.build.profiles)
    return bucket_profiles(buckets, config.build.max_batch, config.build.opt_batch, config.build.fixed_sequence,
                           config.build.static_batches)


def varlen_profile(config, buckets):
    """The one (batch, longest text) profile of a build.varlen engine: batch 1..max_batch, texts up to the largest
    of the (sorted) buckets; TensorRT optimizes for opt_batch texts of the middle bucket."""
    if buckets[-1] > VARLEN_MAX_SEQUENCE:
        raise TrtbuildError("build.varlen takes texts of up to {} tokens; the largest bucket is {}: lower "
                            "data.buckets".format(VARLEN_MAX_SEQUENCE, buckets[-1]))
    opt_batch = config.build.opt_batch or config.build.max_batch
    return ProfileConfig((1, 1), (opt_batch, buckets[len(buckets) // 2]), (config.build.max_batch, buckets[-1]))


def varlen_shapes(profile):
    """{input: (min, opt, max)} of the packed inputs for a varlen_profile (batch, seq) ProfileConfig."""
    (b0, s0), (b1, s1), (b2, s2) = profile.min, profile.opt, profile.max
    tokens = ((b0 * s0,), (b1 * s1,), (b2 * s2,))
    return {"input_ids": tokens, "segment_ids": tokens, "cu_seqlens": ((b0 + 1,), (b1 + 1,), (b2 + 1,)),
            "max_seqlen": ((s0,), (s1,), (s2,))}


def pick_profile(profiles, batch, sequence):
    """Index of the first profile whose [min, max] holds (batch, sequence), or None."""
    for i, p in enumerate(profiles):
        if p.min[0] <= batch <= p.max[0] and p.min[1] <= sequence <= p.max[1]:
            return i
    return None


def fit_profile(profiles, batch, sequence):
    """(profile index, sequence length to pad to) for a batch: the profile that holds it as it is, else the
    one that holds it after the least padding of the sequence (a fixed-sequence bucket profile); or None."""
    exact = pick_profile(profiles, batch, sequence)
    if exact is not None:
        return exact, sequence
    best = None
    for i, p in enumerate(profiles):
        if p.min[0] <= batch <= p.max[0] and p.max[1] >= sequence:
            padded = max(sequence, p.min[1])
            if best is None or padded < best[1]:
                best = (i, padded)
    return best


def engine_profiles(entry):
    """The optimization profiles a manifest entry records, as ProfileConfigs."""
    return [ProfileConfig(tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])) for p in entry.get("profiles", [])]


def fit_feeds(profiles, feeds, input_names):
    """(profile index, feeds) for a batch on an engine with `profiles`: the inputs padded to the profile's
    sequence where it needs it (fit_profile, pad_sequence). One-line error when no profile holds the batch."""
    batch, seq = feeds[input_names[0]].shape
    fit = fit_profile(profiles, batch, seq)
    if fit is None:
        raise TrtbuildError("batch {} x seq {} fits none of the engine's profiles ({}); rebuild with matching "
                            "build.profiles".format(batch, seq, ", ".join(
                                "{}..{}".format(p.min, p.max) for p in profiles)))
    index, padded = fit
    if padded != seq:
        feeds = pad_sequence({n: feeds[n] for n in input_names}, padded)
    return index, feeds


def pad_sequence(feeds, length):
    """Pad every [batch, seq] input to `length` positions: token ids and types 0, attention mask 0 (padded
    positions are masked out, so the logits do not change). Needs an attention_mask input."""
    if "attention_mask" not in feeds:
        raise TrtbuildError("this engine's profiles need the sequence padded, and the model has no attention_mask "
                            "input to mask the padding; rebuild with build.fixed_sequence: false")
    out = {}
    for name, arr in feeds.items():
        extra = length - arr.shape[1]
        out[name] = np.pad(arr, ((0, 0), (0, extra))) if extra > 0 else arr
    return out
