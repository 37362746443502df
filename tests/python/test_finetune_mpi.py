"""`recall finetune` under mpirun is data parallel: 1, 2 and 3 ranks give the same losses and
weights (up to float32 summation order) for the same seed and global batch."""
import os
import sys
import tempfile

import numpy as np
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, write_jsonl  # noqa: E402


def main():
    tmp = tempfile.mkdtemp(prefix="recall-dp-")
    tiny_llama(f"{tmp}/init", seed=0, dtype="float32")
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=int(rng.integers(5, 15))).tolist()}
                                      for _ in range(40)])
    losses, weights = {}, {}
    for np_ in (1, 2, 3):
        out = f"{tmp}/out{np_}"
        p = run(["finetune", "--model", f"{tmp}/init", "--data", f"{tmp}/data.jsonl", "--out", out, "--steps", "6",
                 "--batch", "8", "--lr", "1e-3", "--seed", "4"], np=np_)
        losses[np_] = [float(x) for x in p.stdout.split("losses:")[1].split()]
        weights[np_] = load_file(f"{out}/model.safetensors")
    bad = 0
    for np_ in (2, 3):
        dl = max(abs(a - b) for a, b in zip(losses[1], losses[np_]))
        dw = max((weights[1][k] - weights[np_][k]).abs().max().item() for k in weights[1])
        ok = dl < 1e-5 and dw < 1e-5
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {np_} ranks vs 1: max loss diff {dl:.2e}, max weight diff {dw:.2e}")
    moved = max((weights[1][k] - load_file(f"{tmp}/init/model.safetensors")[k]).abs().max().item() for k in weights[1])
    print(f"{'ok  ' if moved > 1e-4 else 'FAIL'} training moved the weights (max change {moved:.2e})")
    bad += moved <= 1e-4
    print(f"{bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
