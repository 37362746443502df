"""Parity of recall's byte-level BPE (tokenizer.json) with Hugging Face `tokenizers` (issue 10).

Builds tokenizers with the `tokenizers` library, trained here on a generated corpus:
  llama3        Split(Llama-3 regex, Isolated) + ByteLevel(use_regex=False), ignore_merges,
                special tokens after the vocabulary, TemplateProcessing adding <|begin_of_text|>,
                plus added tokens with lstrip/rstrip, single_word and normalized=True;
  llama3-str    the same file with merges written as "a b" strings instead of [a, b] pairs;
  qwen2         NFC normalizer, Split(Qwen2 regex) + ByteLevel, ByteLevel post-processor;
  gpt2          ByteLevel(add_prefix_space=True, use_regex=True) alone;
  ignore-on/off a vocabulary with whole-word tokens that no merge reaches, with ignore_merges
                true and false (the two must differ, and each must match HF).
Over a corpus with accents (composed and decomposed), CJK, emoji, whitespace runs, digits,
newlines, contractions, special tokens and random Unicode, `tok_tool` must give HF's ids exactly
(with and without the post-processor's tokens), decode HF's ids to HF's text (also random id
sequences that split UTF-8 sequences), and round-trip every text exactly.
Bad files (WordPiece, Unigram, other pre-tokenizers/normalizers, byte_fallback, bad merges) must
fail with a message naming the component. Exits non-zero on any mismatch.
"""
import copy
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


# ---- corpus ------------------------------------------------------------------------------------

WORDS = ("the a of and to in is was for on that with as by it at from this be are have not "
         "model merge layer token weight cluster sample merged tokenizer byte pair encoding "
         "Hello World Recall RECALL Llama Qwen MPI rank node GPU TENSOR").split()
EXOTIC = ["café", "naïve", "Ångström", "façade", "über", "São", "Zürich", "jalapeño",
          "cafe\u0301", "A\u030angstro\u0308m", "ñ", "n\u0303", "\u1e9b\u0323",
          "中文", "日本語のテキスト", "한국어", "東京", "汉字和标点，。", "ひらがな",
          "👍", "👍🏽", "👨‍👩‍👧", "🚀🚀", "❤️", "🇫🇷", "Русский", "العربية", "हिन्दी", "ελληνικά",
          "ǅemal", "ſtraße", "ΣΊΣΥΦΟΣ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "x²", "½", "①", "Ⅻ", "٣٤٥", "१२३",
          "3.14159", "2026", "1234567", "007", "1,000,000", "0x1F", "1e-5",
          "I'm", "they'll", "DON'T", "it's", "We've", "you'd", "SHE'S", "o'clock", "’s",
          "\u00a0", "\u3000", "\u2009", "\u200b", "\ufeff", "\t", "\u2028", "\u0085",
          "<|", "|>", "<mask>", "zork", "中文token", "zorkish", "xzork", "recall_magic", "{", "}", "=>", "#!"]
SPACES = [" ", " ", " ", "  ", "   ", "\n", "\n\n", " \n ", "\t", "\r\n", "    \n", " \t "]


def sentence(rng, specials, n):
    parts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.62:
            w = rng.choice(WORDS)
        elif r < 0.93:
            w = rng.choice(EXOTIC)
        else:
            w = rng.choice(specials) if specials else rng.choice(WORDS)
        parts.append(w)
        parts.append(rng.choice(SPACES) if rng.random() < 0.3 else " ")
    return "".join(parts)


def training_corpus(seed=0, n=3000):
    rng = random.Random(seed)
    return [sentence(rng, [], rng.randint(5, 40)) for _ in range(n)]


def random_unicode(rng, n):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0x1E00, 0x1EFF), (0x2000, 0x206F),
              (0x3000, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAC40), (0x1F300, 0x1F64F),
              (0x1F900, 0x1F9FF), (0x9, 0xD)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            c = 0x41
        out.append(chr(c))
    return "".join(out)


def test_corpus(specials, seed=1):
    specials = specials + ["<|endoftext|>"] * (3 - len(specials))
    rng = random.Random(seed)
    texts = [
        "", " ", "  ", "\n", "a", "Hello world", " Hello world", "Hello  world   ",
        "I'm sure they'll say it's DON'T we've you'd",
        "café naïve cafe\u0301 Ångström A\u030angstro\u0308m",
        "中文分词测试。日本語のテキスト、한국어 텍스트!",
        "emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇩🇪 rocket🚀 ❤️",
        "digits 1234567890 3.14159 1,000,000 2026-11-28 007",
        "line one\nline two\r\nline three\n\n\nend",
        "trailing spaces   \n   leading\t\ttabs \u00a0nbsp \u3000ideographic",
        "    indented code:\n        return x + 1  # comment\n",
        "x" * 300, " " * 257, "\n" * 40, "1" * 50, "ab" * 200 + " end",
        "".join(specials) if specials else "no specials",
        (specials[0] + "Hello" + specials[-1] + " world " + specials[1]) if specials else "x",
        ("before " + specials[0] + "   after   " + specials[-1]) if specials else "y",
        "a <mask> b  <mask>  c<mask>d", "zork zorkish xzork zork.", "recall_magic recall_magic!",
        "<|begin_of_text<|end_of_text|>|>", "<||><|>", "ſtraße ǅemal ΣΊΣΥΦΟΣ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "\u1e9b\u0323 \u0071\u0307\u0323 Å Å",
        "\u200b\ufeffzero width\u2028line sep\u0085nel",
    ]
    texts += [sentence(rng, specials, rng.randint(1, 60)) for _ in range(300)]
    texts += [random_unicode(rng, rng.randint(1, 80)) for _ in range(200)]
    # dense mixes of what the split regexes treat specially: contractions, whitespace kinds before
    # letters / digits / punctuation, combining marks, fragments of special tokens
    hard = (list(" \t\n\r'sStTdDmMlLvVeE") + ["\u00a0", "\u3000", "\u2028", "\u0301", "é", "7",
            "42", "!", "?!", "...", "_", "-", "中", "👍", "<|", "|>", "'s", "'LL", "’"] +
            [t[:k] for t in specials for k in (2, len(t) - 1, len(t))])
    texts += ["".join(rng.choice(hard) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    return texts


# ---- tokenizers ----------------------------------------------------------------------------------

def train(tok, vocab_size, specials, corpus):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)


UNREACHABLE_WORDS = ["ĠHelloWorld", "Ġtokenizer", "ĠRECALL", "merged"]


def build_llama3(corpus, vocab_size=1500, ignore_merges=True, unreachable_words=False):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    train(tok, vocab_size, [], corpus)
    if unreachable_words or not ignore_merges:
        # whole-word tokens that no merge builds: ignore_merges decides whether they are used
        doc = json.loads(tok.to_str())
        vocab = doc["model"]["vocab"]
        for w in UNREACHABLE_WORDS if unreachable_words else []:
            if w not in vocab:
                vocab[w] = len(vocab)
        doc["model"]["ignore_merges"] = ignore_merges
        tok = Tokenizer.from_str(json.dumps(doc))
    # Llama 3 puts its special tokens after the BPE vocabulary.
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, rstrip=True,
                                       normalized=False)])
    tok.add_tokens([AddedToken("zork", single_word=True, normalized=False),
                    AddedToken("recall_magic", normalized=True)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def build_qwen2(corpus, vocab_size=1500):
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    train(tok, vocab_size, QWEN2_SPECIALS, corpus)
    # an added (not special) token matched on the NFC form of the text
    tok.add_tokens([AddedToken("café", normalized=True), AddedToken("中文token", normalized=True)])
    return tok


def build_gpt2(corpus, vocab_size=1000):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    train(tok, vocab_size, ["<|endoftext|>"], corpus)
    return tok


def with_string_merges(doc):
    doc = copy.deepcopy(doc)
    doc["model"]["merges"] = [m if isinstance(m, str) else " ".join(m)
                              for m in doc["model"]["merges"]]
    return doc


# ---- recall side ---------------------------------------------------------------------------------

def tok_tool():
    build = os.environ.get("RECALL_BUILD_DIR")
    if build:
        return os.path.join(build, "bin", "tok_tool")
    return os.path.join(os.path.dirname(os.environ["RECALL_BIN"]), "tok_tool")


def run_tool(args, stdin):
    p = subprocess.run([tok_tool()] + args, input=stdin, capture_output=True)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def recall_encode(path, texts, special):
    lines = "".join(json.dumps(t) + "\n" for t in texts).encode()
    rc, out, err = run_tool(["encode-jsonl", path] + (["--special"] if special else []), lines)
    if rc != 0:
        raise RuntimeError("tok_tool encode-jsonl failed: " + err)
    return [json.loads(x) for x in out.split("\n") if x]


def recall_decode(path, id_lists, keep_special):
    lines = "".join(json.dumps(ids) + "\n" for ids in id_lists).encode()
    rc, out, err = run_tool(["decode-jsonl", path] + (["--keep-special"] if keep_special else []),
                            lines)
    if rc != 0:
        raise RuntimeError("tok_tool decode-jsonl failed: " + err)
    return [json.loads(x) for x in out.split("\n") if x]


def compare(name, path, texts, normalizes=False, prefix_space=False, lossy=(), seed=7):
    """lossy: added tokens that do not decode to themselves (whitespace stripping, or
    characters inside the byte-level alphabet), so texts holding them cannot round-trip."""
    hf = Tokenizer.from_file(path)
    total = 0
    for special in (False, True):
        want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=special)]
        got = recall_encode(path, texts, special)
        bad = [i for i in range(len(texts)) if got[i] != want[i]]
        total += sum(len(w) for w in want)
        check(not bad, f"{name}: ids of {len(texts)} texts (add_special_tokens={special}), "
                       f"{sum(len(w) for w in want)} tokens, {len(bad)} differ")
        for i in bad[:3]:
            print(f"      text {texts[i]!r}\n      hf     {want[i]}\n      recall {got[i]}")
    ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    rng = random.Random(seed)
    vocab = hf.get_vocab_size(with_added_tokens=True)
    real_ids = sorted(set(hf.get_vocab(with_added_tokens=True).values()))
    # random id sequences: byte tokens that split UTF-8 sequences, special tokens in between
    random_ids = [[rng.choice(real_ids) for _ in range(rng.randint(1, 30))] for _ in range(300)]
    for keep in (False, True):
        for what, lists in (("ids of the corpus", ids), ("random ids", random_ids)):
            want = hf.decode_batch(lists, skip_special_tokens=not keep)
            got = recall_decode(path, lists, keep)
            bad = [i for i in range(len(lists)) if got[i] != want[i]]
            check(not bad, f"{name}: decode {what} (skip_special_tokens={not keep}), "
                           f"{len(bad)} of {len(lists)} differ")
            for i in bad[:3]:
                print(f"      ids {lists[i]}\n      hf     {want[i]!r}\n      recall {got[i]!r}")
    # exact round trip of the texts themselves (after NFC where the tokenizer normalizes)
    import unicodedata
    got = recall_decode(path, ids, True)
    expect = [unicodedata.normalize("NFC", t) if normalizes else t for t in texts]
    if prefix_space:
        expect = [t if t.startswith(" ") or not t else " " + t for t in expect]
    keep = [i for i in range(len(texts)) if not any(x in expect[i] for x in lossy)]
    bad = [i for i in keep if got[i] != expect[i]]
    check(not bad and len(keep) >= 90,
          f"{name}: decode(encode(text)) == text for {len(keep)} texts, {len(bad)} differ")
    for i in bad[:3]:
        print(f"      text {expect[i]!r}\n      back {got[i]!r}")
    print(f"      ({vocab} ids in vocabulary, {total} tokens compared)")


def split_behaviors(tmp, llama_doc):
    """Every Split behavior, inverted or not, on a regex and on a literal pattern."""
    texts = ["a-b--c", "-start and end-", "x1-22-333y", "no dashes here", "---", "1-2-3 4--5",
             "merged-with-previous", " - - ", "-", "a", ""] + test_corpus([], seed=5)[:60]
    variants = [(b, inv, {"Regex": r"-|\d"}) for b in ("Isolated", "Removed", "MergedWithPrevious",
                "MergedWithNext", "Contiguous") for inv in (False, True)]
    variants.append(("MergedWithNext", False, {"String": "-"}))
    for behavior, invert, pattern in variants:
        doc = copy.deepcopy(llama_doc)
        doc["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Split", "pattern": pattern,
                                                         "behavior": behavior, "invert": invert})
        path = os.path.join(tmp, "split.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        want = [e.ids for e in Tokenizer.from_file(path).encode_batch(texts,
                                                                     add_special_tokens=False)]
        got = recall_encode(path, texts, False)
        bad = [i for i in range(len(texts)) if got[i] != want[i]]
        check(not bad, f"Split {behavior} invert={invert} {pattern}: ids of {len(texts)} texts, "
                       f"{len(bad)} differ")
        for i in bad[:2]:
            print(f"      text {texts[i]!r}\n      hf     {want[i]}\n      recall {got[i]}")


def expect_error(name, path, needle, stdin=b"hello"):
    rc, _, err = run_tool(["encode", path], stdin)
    check(rc == 1 and needle in err, f"error: {name}: exit {rc}, message names {needle!r}")
    if rc != 1 or needle not in err:
        print("      stderr:", err.strip())


def error_cases(tmp, llama_doc):
    def write(name, doc):
        path = os.path.join(tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False))
        return path

    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    expect_error("WordPiece model", write("wp.json", wp.to_str()), "model.type 'WordPiece'")
    ug = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0))
    expect_error("Unigram model", write("ug.json", ug.to_str()), "model.type 'Unigram'")
    doc = copy.deepcopy(llama_doc)
    doc["pre_tokenizer"] = {"type": "Whitespace"}
    expect_error("Whitespace pre-tokenizer", write("ws.json", doc), "pre_tokenizer 'Whitespace'")
    doc = copy.deepcopy(llama_doc)
    doc["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Digits", "individual_digits": True})
    expect_error("Digits in a pre-tokenizer Sequence", write("dg.json", doc), "'Digits'")
    doc = copy.deepcopy(llama_doc)
    doc["pre_tokenizer"] = doc["pre_tokenizer"]["pretokenizers"][0]
    expect_error("no ByteLevel step", write("nobl.json", doc), "has no ByteLevel step")
    doc = copy.deepcopy(llama_doc)
    doc["normalizer"] = {"type": "Lowercase"}
    expect_error("Lowercase normalizer", write("lc.json", doc), "normalizer 'Lowercase'")
    doc = copy.deepcopy(llama_doc)
    doc["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "NFKC"}]}
    expect_error("NFKC in a normalizer Sequence", write("nfkc.json", doc), "normalizer 'NFKC'")
    doc = copy.deepcopy(llama_doc)
    doc["model"]["byte_fallback"] = True
    expect_error("byte_fallback (Llama 2 style)", write("bf.json", doc), "byte_fallback")
    doc = copy.deepcopy(llama_doc)
    doc["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                      "split": True}
    expect_error("Metaspace decoder", write("ms.json", doc), "decoder 'Metaspace'")
    doc = copy.deepcopy(llama_doc)
    doc["post_processor"] = {"type": "BertProcessing", "sep": ["a", 1], "cls": ["b", 2]}
    expect_error("BertProcessing post-processor", write("bp.json", doc),
                 "post_processor 'BertProcessing'")
    doc = copy.deepcopy(llama_doc)
    doc["model"]["merges"].append(["Ġnot_a_token", "x"])
    expect_error("merge of an unknown token", write("mg.json", doc), "'Ġnot_a_token' is not in")
    doc = with_string_merges(llama_doc)
    doc["model"]["merges"].append("onlyone")
    expect_error("merge string without a space", write("mg2.json", doc),
                 "is not two tokens separated by one space")
    doc = copy.deepcopy(llama_doc)
    doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"
    expect_error("regex that does not compile", write("re.json", doc), "does not compile")
    expect_error("truncated JSON", write("trunc.json", json.dumps(llama_doc)[:500]),
                 "is not valid JSON")
    expect_error("missing file", os.path.join(tmp, "absent.json"), "does not exist")
    expect_error("text that is not UTF-8", write("ok.json", llama_doc), "not valid UTF-8",
                 stdin=b"abc\xff\xfe")


def main():
    corpus = training_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        llama = build_llama3(corpus)
        paths["llama3"] = os.path.join(tmp, "llama3.json")
        llama.save(paths["llama3"])
        llama_doc = json.load(open(paths["llama3"], encoding="utf-8"))
        check(isinstance(llama_doc["model"]["merges"][0], list),
              "tokenizers saves merges as [a, b] pairs")
        paths["llama3-str"] = os.path.join(tmp, "llama3_str.json")
        with open(paths["llama3-str"], "w", encoding="utf-8") as f:
            json.dump(with_string_merges(llama_doc), f, ensure_ascii=False)
        qwen = build_qwen2(corpus)
        paths["qwen2"] = os.path.join(tmp, "qwen2.json")
        qwen.save(paths["qwen2"])
        gpt2 = build_gpt2(corpus)
        paths["gpt2"] = os.path.join(tmp, "gpt2.json")
        gpt2.save(paths["gpt2"])
        for on in (True, False):
            key = "ignore-on" if on else "ignore-off"
            paths[key] = os.path.join(tmp, key + ".json")
            build_llama3(corpus, ignore_merges=on, unreachable_words=True).save(paths[key])

        rc, out, err = run_tool(["info", paths["llama3"]], b"")
        info = json.loads(out) if rc == 0 else {}
        bos = llama.token_to_id("<|begin_of_text|>")
        check(info.get("prefix") == [bos] and info.get("suffix") == [],
              f"llama3: post-processor adds BOS {bos}: recall says {info}")
        rc, out, err = run_tool(["info", paths["qwen2"]], b"")
        check(rc == 0 and json.loads(out)["prefix"] == [],
              f"qwen2: post-processor adds nothing: recall says {out.strip()}")

        llama_texts = test_corpus(LLAMA3_SPECIALS + ["<mask>"])
        compare("llama3", paths["llama3"], llama_texts, lossy=["<mask>"])
        compare("llama3 (merges as strings)", paths["llama3-str"], llama_texts, lossy=["<mask>"])
        compare("qwen2", paths["qwen2"], test_corpus(QWEN2_SPECIALS, seed=2), normalizes=True,
                lossy=["café"])
        # add_prefix_space puts a space before every piece between special tokens
        compare("gpt2", paths["gpt2"], test_corpus(["<|endoftext|>"], seed=3), prefix_space=True,
                lossy=["<|endoftext|>"])
        words = ["Hello HelloWorld tokenizer RECALL merged", " HelloWorld", "xmerged merged"]
        for key in ("ignore-on", "ignore-off"):
            compare(key, paths[key], words + test_corpus([], seed=4)[:100], lossy=["<mask>"])
        on = recall_encode(paths["ignore-on"], words, False)
        off = recall_encode(paths["ignore-off"], words, False)
        check(on != off, f"ignore_merges changes the ids: on {on[0]} vs off {off[0]}")

        split_behaviors(tmp, llama_doc)
        error_cases(tmp, llama_doc)

    if FAILURES:
        print(f"{len(FAILURES)} FAILED")
        return 1
    print("all tokenizer parity checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
