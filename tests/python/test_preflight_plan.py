"""`recall preflight` plans cluster jobs from shapes alone: the example configs for Llama-3-8B
(1 node x 8 GPUs) and Llama-3-70B / Qwen2.5-72B (4 nodes x 8 GPUs) are planned from
configs/arch/*.json with --shapes-only --world N (no weights, no data on this machine); the bytes
to read equal an independent count from the architecture; the plan from a config.json alone is
identical to the plan from real (sparse) safetensors headers of the same shapes; bad uses are clear
errors. Prints each comparison."""
import json
import os
import re
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, Checks  # noqa: E402

SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
check = Checks()


def tensor_shapes(cfg):
    """Every tensor of a Llama/Qwen2 checkpoint with this config.json, written independently of recall."""
    H, I, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    d = cfg.get("head_dim") or H // heads
    qwen2 = cfg["model_type"] == "qwen2"
    t = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    if not cfg.get("tie_word_embeddings", False):
        t["lm_head.weight"] = (V, H)
    for l in range(L):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                  p + "self_attn.q_proj.weight": (heads * d, H), p + "self_attn.k_proj.weight": (kv * d, H),
                  p + "self_attn.v_proj.weight": (kv * d, H), p + "self_attn.o_proj.weight": (H, heads * d),
                  p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                  p + "mlp.down_proj.weight": (H, I)})
        if qwen2:
            t.update({p + "self_attn.q_proj.bias": (heads * d,), p + "self_attn.k_proj.bias": (kv * d,),
                      p + "self_attn.v_proj.bias": (kv * d,)})
    return t


def nbytes(shape, size=2):
    n = size
    for s in shape:
        n *= s
    return n


def format_bytes(n):
    """recall's format_bytes for sizes >= 1 GB (decimal units, two decimals)."""
    return f"{n / 1e9:.2f} GB"


def write_sparse_model(path, cfg, shard_bytes=5_000_000_000):
    """config.json + bf16 safetensors shards whose data regions are holes, + the index."""
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    shards, cur, size = [], {}, 0
    for name, shape in tensor_shapes(cfg).items():
        if cur and size + nbytes(shape) > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = shape
        size += nbytes(shape)
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape in shard.items():
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes(shape)]}
            off += nbytes(shape)
            weight_map[name] = file
        text = json.dumps(header).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        with open(os.path.join(path, file), "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            f.truncate(8 + len(text) + off)
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(nbytes(s) for s in tensor_shapes(cfg).values())},
                   "weight_map": weight_map}, f)


def plan_lines(out):
    """The grid and memory-plan part of a preflight log, without timestamps."""
    text = re.sub(r"\[recall +[0-9.]+s\] ", "", out)
    start = text.index("preflight ok:")
    return [l for l in text[start:].splitlines() if l.strip()]


def main():
    tmp = tempfile.mkdtemp(prefix="recall-preflight-plan-")
    examples = [("llama3-8b-1node-8gpu", "llama3-8b", 8, 2), ("llama3-70b-4node-8gpu", "llama3-70b", 32, 8),
                ("qwen2.5-72b-4node-8gpu", "qwen2.5-72b", 32, 8)]
    for cfg_name, arch, world, stages in examples:
        config = os.path.join(SRC, "configs", cfg_name + ".yaml")
        arch_path = os.path.join(SRC, "configs", "arch", arch + ".json")
        p = run(["preflight", "--config", config, "--shapes-only", "--arch", arch_path, "--world", str(world)],
                check=False)
        out = p.stdout + p.stderr
        check(p.returncode == 0, f"{cfg_name}: shapes-only preflight for {world} ranks exits 0 (rc {p.returncode})"
              + ("" if p.returncode == 0 else "\n" + out[-2000:]))
        if p.returncode != 0:
            continue
        arch_cfg = json.load(open(arch_path))
        expect = 4 * sum(nbytes(s) for s in tensor_shapes(arch_cfg).values())
        check(f"{format_bytes(expect)} to read; {world} rank(s) (planned)" in out,
              f"{cfg_name}: bytes to read = 4 x {format_bytes(expect // 4)} counted independently")
        check(f"4 models x {stages} stages = {4 * stages} cells on {world} ranks" in out,
              f"{cfg_name}: grid of 4 models x {stages} stages on {world} ranks")
        ranks = re.findall(r"^  rank (\d+): [0-9.]+ [KMG]?B \+ .* = ([0-9.]+) GB$", out, re.M)
        check(len(ranks) == world, f"{cfg_name}: a memory line for each of the {world} ranks (found {len(ranks)})")
        check("not counted (shapes only)" in out and "no weights read" in out,
              f"{cfg_name}: the log says what was not checked")

    # The plan from config.json alone equals the plan from real headers of the same shapes.
    cfg8 = json.load(open(os.path.join(SRC, "configs", "arch", "llama3-8b.json")))
    data = os.path.join(tmp, "data.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps({"text": f"sample {i}"}) + "\n" for i in range(64))
    configs = {}
    for kind in ("headers", "described"):
        models = []
        for m in range(4):
            d = os.path.join(tmp, kind, f"m{m}")
            if kind == "headers":
                write_sparse_model(d, cfg8)
            else:
                os.makedirs(d)
                with open(os.path.join(d, "config.json"), "w") as f:
                    json.dump(cfg8, f)
            models.append(f"  - {{name: m{m}, path: {d}}}\n")
        path = os.path.join(tmp, kind + ".yaml")
        with open(path, "w") as f:
            f.write("models:\n" + "".join(models) + f"base: m0\nreference: m3\nmethod: recall\ndata: {data}\n"
                    f"typical: {{clusters: 16}}\nparallel: {{stages: 4}}\nmemory_budget: 64GiB\n"
                    f"output: {{dir: {os.path.join(tmp, 'out')}}}\n")
        configs[kind] = path
    a = run(["preflight", "--config", configs["headers"], "--world", "16"], check=False)
    b = run(["preflight", "--config", configs["described"], "--shapes-only", "--world", "16"], check=False)
    check(a.returncode == 0 and b.returncode == 0, f"header and config-only preflights exit 0 ({a.returncode}, "
          f"{b.returncode})" + ("" if a.returncode == b.returncode == 0 else "\n" + a.stderr[-1500:] + b.stderr[-1500:]))
    if a.returncode == 0 and b.returncode == 0:
        pa, pb = plan_lines(a.stdout + a.stderr), plan_lines(b.stdout + b.stderr)
        check(pa == pb and len(pa) > 20, f"config.json-only plan == sparse-header plan ({len(pa)} lines)")
    c = run(["preflight", "--config", configs["described"], "--world", "16"], check=False)
    check(c.returncode != 0 and "m0" in c.stderr, "without --shapes-only a config.json-only directory is an error")

    # Bad uses.
    cfg70 = os.path.join(SRC, "configs", "llama3-70b-4node-8gpu.yaml")
    arch70 = os.path.join(SRC, "configs", "arch", "llama3-70b.json")
    p = run(["preflight", "--config", cfg70, "--shapes-only", "--world", "32"], check=False)
    check(p.returncode != 0 and "/models/Meta-Llama-3-70B" in p.stderr and "--arch" in p.stderr,
          "shapes-only with absent paths and no --arch names the path and --arch")
    p = run(["preflight", "--config", cfg70, "--arch", arch70], check=False)
    check(p.returncode == 2 and "--shapes-only" in p.stderr, "--arch without --shapes-only is a usage error")
    p = run(["preflight", "--config", cfg70, "--shapes-only", "--arch", arch70, "--world", "33"], check=False)
    check(p.returncode != 0 and "32" in p.stderr, "a world larger than the 32 cells is refused, naming 32")
    p = run(["preflight", "--config", cfg70, "--shapes-only", "--arch", arch70, "--world", "32",
             "--set", "memory_budget=30GiB"], check=False)
    check(p.returncode != 0 and "memory_budget" in p.stderr and "HINT" in p.stderr and "on rank" in p.stderr,
          "a plan over memory_budget is refused with the rank and a hint")
    p = run(["merge", "--config", cfg70, "--shapes-only"], check=False)
    check(p.returncode != 0 and "shapes-only" in p.stderr, "`recall merge` does not take --shapes-only")

    # Calibration statistics larger than any disk (issue 20): a RegMean of 4 models of hidden 65536,
    # MLP 262144 and 64 blocks needs 4 x 64 x 8 x (3 x 65536^2 + 262144^2) bytes = 167 TB of Gram
    # files. Refused at preflight with the size, the directory and its free space; the plan of a
    # merge that fits says how much it writes.
    huge = dict(json.load(open(arch70)), hidden_size=65536, intermediate_size=262144, num_hidden_layers=64,
                num_attention_heads=64, num_key_value_heads=8)
    huge_arch = os.path.join(tmp, "huge.json")
    json.dump(huge, open(huge_arch, "w"))
    for method, fits in (("regmean", False), ("linear", True)):
        p = run(["preflight", "--config", cfg70, "--shapes-only", "--arch", huge_arch, "--world", "4",
                 "--set", f"method={method}", "--set", f"output.dir={tmp}/huge-out"], check=False)
        named = f"the calibration statistics of method regmean need "
        where = f" under '{tmp}/huge-out.partial/statistics', but its file system has "
        if fits:
            check(p.returncode == 0 and "calibration statistics" not in p.stdout + p.stderr,
                  "a method without calibration statistics is not checked for their disk space")
        else:
            check(p.returncode != 0 and named in p.stderr and where in p.stderr and "HINT" in p.stderr,
                  f"statistics larger than the disk are refused at preflight, with their size and the free space "
                  f"({p.stderr.strip().splitlines()[1][:150] if len(p.stderr.strip().splitlines()) > 1 else p.stderr[:150]!r})")

    shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
