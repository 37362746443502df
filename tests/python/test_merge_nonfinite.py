"""NaN and infinity are named where they are, wherever they fall in the merge's chunks and pieces
(inputs are checked as they are read, outputs as they are merged, in pieces of 256 KB; on 2 ranks
the chunks are made 64 KiB with parallel.merge_chunk_bytes, so the bad value is in a later chunk). Models
with a 8192 x 64 bf16 embedding (1 MiB: four pieces) on 1 and 2 ranks: a NaN in an input's
embedding at row 7000 (rank 1's rows, second piece of its range), an infinity in the first row of a
block tensor, and an output that overflows bf16 (two finite 3e38 values summed with
normalize: false) are each reported with their exact [row, column], exit non-zero and commit
nothing; the same models without the bad values merge (linear and TIES) and `recall verify`
accepts their checksums, which a 1-rank merge and TIES compute as they write."""
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, Checks  # noqa: E402

check = Checks()
EMBED = "model.embed_tokens.weight"


def variant(src, dst, name, index, value):
    shutil.copytree(src, dst)
    sd = load_file(f"{dst}/model.safetensors")
    sd[name][index] = value
    save_file(sd, f"{dst}/model.safetensors", metadata={"format": "pt"})


def main():
    tmp = tempfile.mkdtemp(prefix="recall-nonfinite-")
    try:
        base = tiny_llama(f"{tmp}/a", seed=1, vocab=8192, layers=2)
        tiny_llama(f"{tmp}/b", seed=2, vocab=8192, layers=2, base_state=base, noise=0.01)
        variant(f"{tmp}/b", f"{tmp}/nan", EMBED, (7000, 3), float("nan"))
        variant(f"{tmp}/b", f"{tmp}/inf", "model.layers.1.mlp.up_proj.weight", (0, 5), float("-inf"))
        variant(f"{tmp}/a", f"{tmp}/big_a", EMBED, (7001, 60), 3e38)
        variant(f"{tmp}/b", f"{tmp}/big_b", EMBED, (7001, 60), 3e38)

        def merge(name, models, extra, np):
            cfg = f"{tmp}/{name}-{np}.yaml"
            out = f"{tmp}/out-{name}-{np}"
            with open(cfg, "w") as f:
                f.write("models:\n" + "".join(f"  - {{name: {m}, path: {tmp}/{m}}}\n" for m in models) +
                        f"{extra}\noutput: {{dir: {out}}}\n")
            p = run(["merge", "--config", cfg, "--quiet"], np=np, check=False)
            return p, out

        for np in (1, 2):
            # The same models without bad values merge, and every checksum (hashed as written where
            # one rank writes a whole tensor: 1 rank, or TIES's owner of a tensor) matches the files.
            for method in ("linear", "ties"):
                extra = "method: linear" if method == "linear" else "method: ties\nbase: a\nparams: {density: 0.5}"
                # 64 KiB chunks: the 1 MiB embedding is merged (and hashed) in 16 steps.
                extra += "\nparallel: {merge_chunk_bytes: 64KiB}"
                p, out = merge(f"ok-{method}", ["a", "b"], extra, np)
                v = run(["verify", out], check=False)
                check(p.returncode == 0 and v.returncode == 0,
                      f"{np} rank(s), {method}: the models without bad values merge and verify "
                      f"(exit {p.returncode}, verify {v.returncode})")
            cases = [
                ("NaN in an input", ["a", "nan"], "method: linear",
                 f"model 'nan' ({tmp}/nan): tensor '{EMBED}' holds NaN or infinity at [7000, 3]"),
                ("infinity in an input", ["inf", "a"], "method: linear",
                 f"model 'inf' ({tmp}/inf): tensor 'model.layers.1.mlp.up_proj.weight' holds NaN or infinity at [0, 5]"),
                ("overflow in the output", ["big_a", "big_b"], "method: linear\nparams: {normalize: false}",
                 f"merged tensor '{EMBED}' is NaN or infinite at [7001, 60] (overflow in bfloat16?"),
            ]
            for what, models, extra, needle in cases:
                if np == 2:  # chunks of 64 KiB: the bad value lies in a later chunk of rank 1's rows
                    extra += "\nparallel: {merge_chunk_bytes: 64KiB}"
                p, out = merge(what.replace(" ", "_"), models, extra, np)
                msg = p.stdout + p.stderr
                check(p.returncode != 0 and needle in msg,
                      f"{np} rank(s), {what}: exit {p.returncode}, message names it: {needle!r}"
                      + ("" if needle in msg else f"\n      got: {msg.strip()[:400]}"))
                check(not os.path.exists(out), f"{np} rank(s), {what}: nothing committed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
