"""A CLIP BPE tokenizer built from a locally written vocabulary.

The Hugging Face Hub is not reachable from tests, CI or the GPU bench machine, so
the tokenizer files are generated here: every byte-level symbol (as GPT-2/CLIP map
bytes to unicode), each with and without the end-of-word marker, the two special
tokens, plus a few merges of common lowercase pairs so BPE has work to do. Any
text tokenizes (unknown pairs fall back to single symbols); token ids stay below
``vocab_size()``.
"""

import json
import os

_COMMON_PAIRS = ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "st", "es", "or", "te", "of"]


def _bytes_to_unicode():
    """The byte → printable unicode map of GPT-2/CLIP byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_vocab_and_merges():
    """Returns (vocab dict, merges list)."""
    symbols = _bytes_to_unicode()
    vocab = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merges = []
    for pair in _COMMON_PAIRS:
        a, b = pair[0], pair[1]
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
        merges.append(f"{a} {b}</w>")
        vocab[a + b + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def vocab_size():
    return len(build_vocab_and_merges()[0])


def write_tokenizer_files(out_dir):
    """Writes vocab.json and merges.txt into out_dir and returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    vocab, merges = build_vocab_and_merges()
    vocab_path = os.path.join(out_dir, "vocab.json")
    merges_path = os.path.join(out_dir, "merges.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(merges) + "\n")
    return vocab_path, merges_path


def build_clip_tokenizer(work_dir, model_max_length=77):
    """Builds a transformers CLIPTokenizer from files written into work_dir."""
    from transformers import CLIPTokenizer

    vocab_path, merges_path = write_tokenizer_files(work_dir)
    try:
        return CLIPTokenizer(vocab=vocab_path, merges=merges_path, model_max_length=model_max_length)
    except TypeError:
        # transformers 4.x names the file arguments differently.
        return CLIPTokenizer(vocab_file=vocab_path, merges_file=merges_path, model_max_length=model_max_length)
