"""Inputs and outputs a hostile or careless user hands to recall (labels python, fault; issue 17).

- A side file of a model linked out of its directory (merges.txt -> a password file): the merge is
  refused at preflight naming the file, and nothing of the target reaches any output; a Hugging Face
  cache snapshot (files linked into ../../blobs) merges; side files are exported with no wider
  permissions than their source's and never world-writable.
- `recall verify` checks everything a loader trusts: for outputs of RECALL (one shard) and of a
  linear merge (several shards + index), each edit below must be refused, each with its message:
  a shard header's dtype or shape, an extra or a missing shard, an extra or a missing index, an
  index that misplaces a tensor, a header with other metadata, hf/config.json, a /recall dataset,
  a `.partial` directory (never committed), and `verify out/hf` (points at the output directory).
  Each edit keeps a valid safetensors file whose bytes match the checksums, so only the new checks
  see it.
- `data` naming a directory is reported as a directory.
"""
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, run, tiny_llama, write_jsonl  # noqa: E402

check = Checks()
SECRET = "root:$6$Zq8.secret-hash:19000:0:99999:7:::\n"


def write_config(path, models, out, extra):
    with open(path, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {p}}}\n" for n, p in models))
        f.write(f"output: {{dir: {out}, dtype: bfloat16}}\n{extra}\n")


def rewrite_header(path, edit):
    """Rewrites a safetensors header through edit(header dict); the data buffer stays as it is."""
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


def verify_problems(path):
    p = run(["verify", path], check=False)
    return p.returncode, p.stderr


def expect_refused(out, what, edit, needles):
    bad = out + "-edited"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(out, bad, symlinks=True)
    target = edit(bad)  # a path to verify instead of the copy, or None
    rc, err = verify_problems(target if isinstance(target, str) else bad)
    missing = [n for n in needles if n not in err]
    check(rc != 0 and not missing, f"verify refuses {what}" + (f" -- missing {missing} in: {err!r}" if missing else ""))
    shutil.rmtree(bad, ignore_errors=True)


def shard_edit(name, fn):
    return lambda d: rewrite_header(f"{d}/hf/{name}", fn)


def main():
    tmp = tempfile.mkdtemp(prefix="recall-hostile-")
    base = tiny_llama(f"{tmp}/base", seed=0, layers=2)
    for i, n in enumerate(["a", "b"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, base_state=base, noise=0.02, layers=2)
    rng = np.random.default_rng(1)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(16)])
    models = [("a", f"{tmp}/a"), ("b", f"{tmp}/b")]

    # ---- item 5: side files linked out of the model directory ------------------------------------
    open(f"{tmp}/shadow", "w").write(SECRET)
    shutil.copytree(f"{tmp}/b", f"{tmp}/evil")
    os.symlink(f"{tmp}/shadow", f"{tmp}/evil/merges.txt")
    cfg = f"{tmp}/evil.yaml"
    write_config(cfg, [("a", f"{tmp}/a"), ("evil", f"{tmp}/evil")], f"{tmp}/evil-out", "method: linear")
    p = run(["merge", "--config", cfg], np=2, check=False)
    msg = p.stdout + p.stderr
    check(p.returncode != 0 and f"{tmp}/evil/merges.txt" in msg and "outside the model directory" in msg,
          "a side file linked out of the model directory is refused, naming it")
    leaked = [os.path.join(r, f) for r, _, fs in os.walk(tmp) for f in fs
              if not os.path.islink(os.path.join(r, f)) and os.path.join(r, f) != f"{tmp}/shadow"
              and SECRET[:20] in open(os.path.join(r, f), "rb").read().decode("latin-1")]
    check(not os.path.exists(f"{tmp}/evil-out") and not os.path.exists(f"{tmp}/evil-out.partial") and not leaked
          and "Zq8" not in msg, f"nothing written, the secret is in no file and no message ({leaked})")

    # A Hugging Face cache snapshot (every file a link into ../../blobs) merges; side files keep
    # (or narrow) their permissions in the export.
    repo = f"{tmp}/hub/models--org--tiny"
    os.makedirs(f"{repo}/blobs")
    os.makedirs(f"{repo}/snapshots/0123abc")
    open(f"{tmp}/b/tokenizer_config.json", "w").write('{"model_max_length": 128}')
    open(f"{tmp}/b/special_tokens_map.json", "w").write("{}")
    os.chmod(f"{tmp}/b/tokenizer_config.json", 0o600)
    os.chmod(f"{tmp}/b/special_tokens_map.json", 0o666)
    for i, f in enumerate(sorted(os.listdir(f"{tmp}/b"))):
        shutil.copy2(f"{tmp}/b/{f}", f"{repo}/blobs/{i:040x}")
        os.symlink(f"../../blobs/{i:040x}", f"{repo}/snapshots/0123abc/{f}")
    snap = f"{repo}/snapshots/0123abc"
    cfg = f"{tmp}/hub.yaml"
    write_config(cfg, [("a", f"{tmp}/a"), ("hub", snap)], f"{tmp}/hub-out", "method: linear")
    old_umask = os.umask(0o022)
    p = run(["merge", "--config", cfg], np=2, check=False)
    os.umask(old_umask)
    check(p.returncode == 0 and run(["verify", f"{tmp}/hub-out"], check=False).returncode == 0,
          "a Hugging Face cache snapshot (links into ../../blobs) merges and verifies" +
          ("" if p.returncode == 0 else f": {p.stderr[-500:]}"))
    if p.returncode == 0:
        modes = {f: stat.S_IMODE(os.stat(f"{tmp}/hub-out/hf/{f}").st_mode)
                 for f in ("tokenizer_config.json", "special_tokens_map.json")}
        check(modes == {"tokenizer_config.json": 0o600, "special_tokens_map.json": 0o644},
              f"exported side files: 0600 stays 0600, 0666 becomes 0644 ({ {k: oct(v) for k, v in modes.items()} })")

    # ---- item 8: data naming a directory ----------------------------------------------------------
    cfg = f"{tmp}/datadir.yaml"
    write_config(cfg, models, f"{tmp}/dd-out", f"method: recall\ndata: {tmp}/hub\ntypical: {{clusters: 2}}")
    p = run(["preflight", "--config", cfg], check=False)
    check(p.returncode != 0 and f"'{tmp}/hub' is a directory; expected a JSON-lines file" in p.stdout + p.stderr,
          "data naming a directory is reported as a directory")

    # ---- item 7: verify checks everything ----------------------------------------------------------
    rec = f"{tmp}/rec"
    cfg = f"{tmp}/rec.yaml"
    write_config(cfg, models, rec, f"method: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\n"
                 "parallel: {stages: 2, micro_batch: 2}")
    run(["merge", "--config", cfg, "--quiet"], np=2)
    lin = f"{tmp}/lin"
    cfg = f"{tmp}/lin.yaml"
    write_config(cfg, models, lin, "method: linear")
    run(["merge", "--config", cfg, "--quiet", "--set", "output.shard_bytes=60KB"], np=2)
    shards = sorted(f for f in os.listdir(f"{lin}/hf") if f.endswith(".safetensors"))
    check(len(shards) >= 3, f"the linear output has several shards ({len(shards)})")
    for out in (rec, lin):
        rc, err = verify_problems(out)
        check(rc == 0, f"verify accepts the untouched {os.path.basename(out)} output {err[-300:]}")

    t = "model.layers.0.mlp.down_proj.weight"   # [64, 96] bf16
    def set_field(field, value):
        return lambda h: h[t].__setitem__(field, value)
    expect_refused(rec, "a shard header's dtype (BF16 -> F16)", shard_edit("model.safetensors", set_field("dtype", "F16")),
                   [f"hf/model.safetensors: tensor '{t}' is F16 [64, 96]; the manifest says BF16 [64, 96]"])
    expect_refused(rec, "a shard header's shape ([64, 96] -> [96, 64])",
                   shard_edit("model.safetensors", set_field("shape", [96, 64])),
                   [f"tensor '{t}' is BF16 [96, 64]; the manifest says BF16 [64, 96]"])
    expect_refused(rec, "a header with other metadata", shard_edit("model.safetensors",
                   lambda h: h["__metadata__"].update(format="pt", note="x")),
                   ["hf/model.safetensors: header differs from the one the merge writes"])
    expect_refused(rec, "an extra shard", lambda d: shutil.copy(f"{d}/hf/model.safetensors", f"{d}/hf/model-extra.safetensors") and None,
                   ["hf/model-extra.safetensors: a weights file that is not one of the manifest's 1 shard(s)"])
    expect_refused(rec, "a pickle beside the shards", lambda d: open(f"{d}/hf/pytorch_model.bin", "wb").write(b"x"),
                   ["hf/pytorch_model.bin: a weights file that is not one of the manifest's"])
    expect_refused(rec, "an index beside a single shard",
                   lambda d: open(f"{d}/hf/model.safetensors.index.json", "w").write('{"weight_map": {"x": "model.safetensors"}}'),
                   ["hf/model.safetensors.index.json: present, but the manifest lists one shard"])

    def edit_config(d):
        cfgj = json.load(open(f"{d}/hf/config.json"))
        cfgj["rope_theta"] = 1234.0
        json.dump(cfgj, open(f"{d}/hf/config.json", "w"))
    expect_refused(rec, "hf/config.json with another rope_theta", edit_config,
                   ["hf/config.json: 'rope_theta' is 1234.0; merged.h5's architecture_config has"])

    def edit_dtype(d):
        cfgj = json.load(open(f"{d}/hf/config.json"))
        cfgj["torch_dtype"] = "float32"
        json.dump(cfgj, open(f"{d}/hf/config.json", "w"))
    expect_refused(rec, "hf/config.json with another torch_dtype", edit_dtype,
                   ["hf/config.json: 'torch_dtype' is \"float32\"; the tensors are BF16"])

    def drop_weights(d):
        with h5py.File(f"{d}/merged.h5", "a") as f:
            del f["recall/weights"]
    expect_refused(rec, "merged.h5 without /recall/weights", drop_weights,
                   ["merged.h5:/recall/weights: missing (the method is recall)"])

    def bad_weights(d):
        with h5py.File(f"{d}/merged.h5", "a") as f:
            f["recall/weights"][0, 0] += 0.5
    expect_refused(rec, "RECALL weights that do not sum to 1", bad_weights,
                   ["merged.h5:/recall/weights: block 0 has weights summing to"])
    expect_refused(rec, "a .partial directory (never committed)",
                   lambda d: (shutil.copytree(d, d + ".partial"), d + ".partial")[1],
                   ["is the working directory of a merge that never committed"])
    shutil.rmtree(rec + "-edited.partial", ignore_errors=True)
    rc, err = verify_problems(f"{rec}/hf")
    check(rc != 0 and f"point verify at the output directory '{rec}'" in err and "never committed" not in err,
          f"verify out/hf points at the output directory: {err.strip()[:200]}")

    last = shards[-1]
    expect_refused(lin, "a missing shard", lambda d: os.remove(f"{d}/hf/{shards[1]}"),
                   [f"hf/{shards[1]}: missing (listed in the manifest's hf_shards)"])
    expect_refused(lin, "an extra shard beside the index",
                   lambda d: shutil.copy(f"{d}/hf/{last}", f"{d}/hf/model-00099-of-00099.safetensors") and None,
                   ["hf/model-00099-of-00099.safetensors: a weights file that is not one of the manifest's"])
    expect_refused(lin, "a missing index", lambda d: os.remove(f"{d}/hf/model.safetensors.index.json"),
                   ["hf/model.safetensors.index.json: missing"])

    def misplace(d):
        idx = json.load(open(f"{d}/hf/model.safetensors.index.json"))
        name = next(k for k, v in idx["weight_map"].items() if v == last)
        idx["weight_map"][name] = shards[0]
        json.dump(idx, open(f"{d}/hf/model.safetensors.index.json", "w"))
    expect_refused(lin, "an index that places a tensor in the wrong shard", misplace,
                   [f"in '{shards[0]}', but it is in '{last}'"])
    subprocess.run(["rm", "-rf", tmp])
    check.finish()


if __name__ == "__main__":
    main()
