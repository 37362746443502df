"""`recall export merged.h5 --out DIR` on merges of stories260K (converted from llama2.c, with its
SentencePiece tokenizer):

- the export is complete: shards (+ index), config.json, the reference model's tokenizer files, a
  generation_config.json and a model card; `recall generate --model <export>` continues "Once upon
  a time" exactly as the source model does (a linear merge of two copies is the model itself), and
  transformers loads the export's tokenizer and model and generates the same tokens;
- --shard-bytes takes sizes as output.shard_bytes does (1MB, 200KiB, 1e5 give the shards of
  1000000, 204800, 100000 bytes) and refuses -5, foo, 5gb and 1.5 naming the option, the value and
  the reason, before writing anything;
- the model card of a RECALL merge marks the reference and lists per-block weights; a TIES merge's
  card marks the base (not a reference) and lists its parameters; the tag `recall` appears once;
- with the reference model gone, the export warns, still writes the weights, and exits 0; --source
  DIR takes the tokenizer from another directory."""
import glob
import json
import os
import re
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import SHARED, Checks, run, write_jsonl  # noqa: E402

check = Checks()
DATA = os.path.join(SHARED, "data", "stories260K")
PROMPT = "Once upon a time"


def noisy_copy(src, dst, scale, seed):
    shutil.copytree(src, dst)
    g = torch.Generator().manual_seed(seed)
    sd = load_file(f"{dst}/model.safetensors")
    sd = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in sd.items()}
    save_file(sd, f"{dst}/model.safetensors", metadata={"format": "pt"})


def config(path, models, method, out, extra=""):
    """models: (name, path) or (name, path, "params: {...}") tuples."""
    lines = ["models:"] + [f"  - {{name: {m[0]}, path: {m[1]}{', ' + m[2] if len(m) > 2 else ''}}}" for m in models]
    lines += [f"method: {method}", extra, f"output: {{dir: {out}, dtype: float32}}"]
    open(path, "w").write("\n".join(lines) + "\n")


def generated(model):
    p = run(["generate", "--model", model, "--prompt", PROMPT, "--max-new", "24"])
    return re.search(r"^prompt:(.*)$", p.stdout, re.M).group(1).split(), \
        re.search(r"^tokens:(.*)$", p.stdout, re.M).group(1).split()


def shards(d):
    return sorted(os.path.basename(f) for f in glob.glob(f"{d}/*.safetensors"))


def main():
    tmp = tempfile.mkdtemp(prefix="recall-export-")
    src = f"{tmp}/s260"
    run(["convert", "--from", "llama2c", f"{DATA}/stories260K.bin", "--out", src, "--tokenizer", f"{DATA}/tok512.model"])
    shutil.copytree(src, f"{tmp}/a")
    shutil.copytree(src, f"{tmp}/b")

    # ---- a linear merge of two copies, exported: complete, and it generates like the source -----
    config(f"{tmp}/lin.yaml", [("a", f"{tmp}/a"), ("b", f"{tmp}/b")], "linear", f"{tmp}/lin")
    run(["merge", "--config", f"{tmp}/lin.yaml", "--quiet"], np=1)
    h5 = f"{tmp}/lin/merged.h5"
    out = f"{tmp}/exp"
    p = run(["export", h5, "--out", out])
    files = sorted(os.listdir(out))
    need = {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
            "generation_config.json", "README.md"}
    check(need <= set(files), f"the export has {sorted(need)}: {files}")
    gen = json.load(open(f"{out}/generation_config.json"))
    check(gen.get("bos_token_id") == 1 and gen.get("eos_token_id") == 2,
          f"generation_config.json derived from config.json (bos 1, eos 2): {gen}")
    want_prompt, want = generated(src)
    got_prompt, got = generated(out)
    check(got_prompt == want_prompt == ["1", "403", "407", "261", "378"] and got == want,
          f"recall generate on the export: prompt {got_prompt}, tokens {' '.join(got[:8])}... equal the source's")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(PROMPT)["input_ids"]
    check([str(i) for i in ids] == want_prompt, f"transformers tokenizes the export's prompt as recall does: {ids}")
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    hf = model.generate(torch.tensor([ids]), max_new_tokens=len(want), do_sample=False)[0, len(ids):].tolist()
    check([str(i) for i in hf] == want[:len(hf)] and len(hf) > 0,
          f"transformers generates the same tokens from the export with its generation_config ({len(hf)} tokens)")
    card = open(f"{out}/README.md").read()
    tags = re.search(r"^tags:\n((?:- .*\n)+)", card, re.M).group(1).split()
    check(tags.count("recall") == 1 and tags.count("linear") == 1, f"the card's tags name recall and linear once: {tags}")

    # ---- under mpirun: one rank per shard, every rank's checksums gathered; the same files ----------
    one, two = f"{tmp}/np1", f"{tmp}/np2"
    run(["export", h5, "--out", one, "--shard-bytes", "200KiB"])
    p = run(["export", h5, "--out", two, "--shard-bytes", "200KiB"], np=2, check=False)
    s1, s2 = shards(one), shards(two)
    same = p.returncode == 0 and s1 == s2 and len(s1) > 2 and all(
        open(f"{one}/{f}", "rb").read() == open(f"{two}/{f}", "rb").read() for f in s1 + ["model.safetensors.index.json"])
    check(same and p.stdout.count("wrote ") == 1,
          f"an export on 2 ranks writes the same {len(s1)} shards and index as on one, and reports once "
          f"(exit {p.returncode}) {p.stderr.strip()[-300:]!r}")

    # ---- --shard-bytes: the size grammar of output.shard_bytes -----------------------------------
    for text, plain in (("1MB", "1000000"), ("200KiB", "204800"), ("1e5", "100000")):
        a, b = f"{tmp}/sh-{text}", f"{tmp}/sh-{plain}"
        run(["export", h5, "--out", a, "--shard-bytes", text])
        run(["export", h5, "--out", b, "--shard-bytes", plain])
        sa, sb = shards(a), shards(b)
        limit = int(plain)
        index = json.load(open(f"{a}/model.safetensors.index.json"))["weight_map"] if len(sa) > 1 else {}
        per_shard = {}
        for name, f in index.items():
            per_shard.setdefault(f, []).append(name)
        fits = all(os.path.getsize(f"{a}/{f}") <= limit + 4096 or len(per_shard[f]) == 1 for f in sa)
        check(sa == sb and 1 < len(sa) < len(index) and fits,
              f"--shard-bytes {text}: {len(sa)} shards of {len(index)} tensors, the same as {plain}, each within the "
              "limit (or one tensor)")
        same = all(torch.equal(load_file(f"{a}/{f}")[k], load_file(f"{b}/{f}")[k])
                   for f in sa for k in load_file(f"{a}/{f}"))
        check(same, f"--shard-bytes {text}: the shards hold the same tensors as with {plain}")
    for bad, why in (("-5", "cannot be negative"), ("foo", "does not start with a number"),
                     ("5gb", "unknown unit 'gb'"), ("1.5", "not a whole number of bytes")):
        dst = f"{tmp}/bad{bad}"
        p = run(["export", h5, "--out", dst, "--shard-bytes", bad], check=False)
        check(p.returncode == 1 and f"--shard-bytes must be a byte count" in p.stderr and f"'{bad}'" in p.stderr
              and why in p.stderr and "stoull" not in p.stderr and not os.path.exists(dst)
              and not os.path.exists(dst + ".partial"),
              f"--shard-bytes {bad} refused before writing: {p.stderr.strip()!r}")

    # ---- model cards of a RECALL and a TIES merge ------------------------------------------------
    noisy_copy(src, f"{tmp}/c", 0.01, 1)
    noisy_copy(src, f"{tmp}/d", 0.02, 2)
    write_jsonl(f"{tmp}/data.jsonl", [{"text": t} for t in
                                      ["Once upon a time, there was a little girl named Lily.",
                                       "She loved to play outside in the park.", "One day, she saw a big, red ball.",
                                       "Tom and his dog went to the beach.", "The sun was hot and the sky was blue."]])
    models = [("base", src), ("c", f"{tmp}/c"), ("d", f"{tmp}/d")]
    config(f"{tmp}/rec.yaml", models, "recall", f"{tmp}/rec", f"reference: c\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 2}}")
    run(["merge", "--config", f"{tmp}/rec.yaml", "--quiet"], np=1)
    run(["export", f"{tmp}/rec/merged.h5", "--out", f"{tmp}/rec-exp"])
    card = open(f"{tmp}/rec-exp/README.md").read()
    rep = json.load(open(f"{tmp}/rec/report.json"))
    rows = re.findall(r"^\| (\d+) \|((?: [0-9.]+ \|)+)$", card, re.M)
    table = [[float(x) for x in cells.replace("|", " ").split()] for _, cells in rows]
    weights = [[round(w, 4) for w in b["weights"]] for b in rep["blocks"]]
    check(table == weights and len(table) == 5, f"the RECALL export's card lists the per-block weights of report.json ({len(table)} blocks)")
    check("`c`: " + f"{tmp}/c (reference" in card and "(base" not in card and
          re.search(r"^tags:\n- merge\n- recall\n---", card, re.M) is not None,
          "the RECALL card marks the reference c, no base, and tags recall once")
    weighted = [("base", src), ("c", f"{tmp}/c", "params: {weight: 0.7}"), ("d", f"{tmp}/d", "params: {weight: 0.3}")]
    config(f"{tmp}/ties.yaml", weighted, "ties", f"{tmp}/ties", "base: base\nparams: {density: 0.5, lambda: 0.9}")
    run(["merge", "--config", f"{tmp}/ties.yaml", "--quiet"], np=1)
    run(["export", f"{tmp}/ties/merged.h5", "--out", f"{tmp}/ties-exp"])
    card = open(f"{tmp}/ties-exp/README.md").read()
    check(f"`base`: {src} (base" in card and "reference" not in card.split("## Configuration")[0],
          "the TIES card marks the base and calls no model the reference")
    check("| model | density | weight |" in card and "| c | 0.5 | 0.7 |" in card and "| d | 0.5 | 0.3 |" in card
          and "| base | (base) | (base) |" in card and "lambda: 0.9; normalize: true" in card
          and "keeping the top 50%" in card,
          "the TIES card lists each model's weight and density, lambda and normalize (TIES's default)")

    # ---- the reference model is gone: warn, export the weights anyway; --source ------------------
    shutil.rmtree(f"{tmp}/b")
    p = run(["export", h5, "--out", f"{tmp}/gone"])
    files = sorted(os.listdir(f"{tmp}/gone"))
    check(p.returncode == 0 and "warning: the reference model 'b' is gone" in p.stderr and f"{tmp}/b" in p.stderr
          and {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= set(files)
          and "tokenizer.model" not in files,
          f"reference gone: a warning naming it, the weights exported without a tokenizer: {files}")
    run(["export", h5, "--out", f"{tmp}/src", "--source", f"{tmp}/a"])
    check(generated(f"{tmp}/src")[1] == want,
          "--source DIR supplies the tokenizer: recall generate works on that export")
    p = run(["export", h5, "--out", f"{tmp}/nosrc", "--source", f"{tmp}/nowhere"], check=False)
    check(p.returncode == 1 and f"--source '{tmp}/nowhere' is not a directory" in p.stderr,
          f"--source that does not exist is an error: {p.stderr.strip()!r}")

    shutil.rmtree(tmp)
    check.finish()


if __name__ == "__main__":
    main()
