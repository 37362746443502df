"""output.formats: a merge writes only what it is asked for, and verify, export and resume follow.

Tiny 4-block Llamas merged on 2 ranks with `linear` (rows split among ranks, so checksums are read
back) and `ties` (whole tensors, hashed as written):
  - [hf, h5] (the default) is the reference; [hf] writes hf/ and no merged.h5, [h5] merged.h5 and
    no hf/; the bytes of the one written equal the reference's, the manifest lists the outputs, and
    report.json counts the bytes written once per output;
  - `recall verify` passes on each and fails after one byte of the written output is changed;
  - `recall export` of an [h5] output gives the reference's shards;
  - a rank killed during the merge (fault injection), then a rerun: the rerun resumes the tensors
    already merged and gives the same bytes, for [hf] and for [h5]."""
import hashlib
import json
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, run, tiny_llama  # noqa: E402

check = Checks()


def hf_digest(out):
    return hashlib.sha256(open(f"{out}/hf/model.safetensors", "rb").read()).hexdigest()


def st_tensors(path):
    return {k: v.contiguous().view(-1).view(torch.uint8).numpy().tobytes() for k, v in load_file(path).items()}


def h5_data_offset(path):
    """File offset of the first byte of a tensor's data in merged.h5 (contiguous datasets)."""
    with h5py.File(path, "r") as f:
        return f["tensors"]["lm_head.weight"].id.get_offset() + 10


def h5_tensors(path):
    with h5py.File(path, "r") as f:
        return {k: np.ascontiguousarray(f["tensors"][k][()]).tobytes() for k in sorted(f["tensors"])}


def flip_a_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def main():
    tmp = tempfile.mkdtemp(prefix="recall-formats-")
    base = tiny_llama(f"{tmp}/base", seed=0, layers=4)
    for i, n in enumerate(["a", "b"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, layers=4, base_state=base, noise=0.02)
    for method, extra in (("linear", ""), ("ties", "base: base\nparams: {density: 0.5}\n")):
        cfg = f"{tmp}/{method}.yaml"
        with open(cfg, "w") as f:
            f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in ("base", "a", "b")) +
                    f"method: {method}\n{extra}output: {{dtype: bfloat16, checkpoint_bytes: 0}}\n")

        def merge(out, formats, **kw):
            return run(["merge", "--config", cfg, "--set", f"output.dir={out}", "--set", f"output.formats={formats}"],
                       np=2, **kw)

        ref = f"{tmp}/{method}-both"
        merge(ref, "[hf, h5]")
        ref_h5 = h5_tensors(f"{ref}/merged.h5")
        both_bytes = json.load(open(f"{ref}/report.json"))["bytes_written"]
        for formats in ("[hf]", "[h5]"):
            out = f"{tmp}/{method}-{formats[1:-1]}"
            merge(out, formats)
            man = json.load(open(f"{out}/manifest.json"))
            rep = json.load(open(f"{out}/report.json"))
            tag = f"{method} {formats}"
            check(man["outputs"] == [formats[1:-1]], f"{tag}: the manifest lists the outputs ({man['outputs']})")
            check(rep["bytes_written"] * 2 == both_bytes, f"{tag}: report.json counts the bytes of one output "
                                                          f"({rep['bytes_written']} of {both_bytes})")
            if formats == "[hf]":
                check(not os.path.exists(f"{out}/merged.h5"), f"{tag}: no merged.h5")
                check(hf_digest(out) == hf_digest(ref), f"{tag}: hf/ holds the reference's bytes")
                target = f"{out}/hf/model.safetensors"
            else:
                check(not os.path.exists(f"{out}/hf"), f"{tag}: no hf/")
                check(h5_tensors(f"{out}/merged.h5") == ref_h5, f"{tag}: merged.h5 holds the reference's tensors")
                exported = f"{tmp}/{method}-exported"
                run(["export", f"{out}/merged.h5", "--out", exported])
                check(st_tensors(f"{exported}/model.safetensors") == st_tensors(f"{ref}/hf/model.safetensors"),
                      f"{tag}: recall export gives the reference's tensors")
                target = f"{out}/merged.h5"
            check(run(["verify", out], check=False).returncode == 0, f"{tag}: recall verify passes")
            flip_a_byte(target, os.path.getsize(target) - 100 if formats == "[hf]" else h5_data_offset(target))
            check(run(["verify", out], check=False).returncode != 0, f"{tag}: recall verify fails after a byte changed")
            # Resume: rank 1 killed after its 7th tensor, then the same job again.
            out = f"{tmp}/{method}-{formats[1:-1]}-resumed"
            p = merge(out, formats, check=False, env={"RECALL_FAULT_INJECT": "merge:1:7"})
            check(p.returncode != 0 and not os.path.exists(out), f"{tag}: a killed rank fails the job, nothing committed")
            p = merge(out, formats)
            check("tensors already merged" in p.stdout, f"{tag}: the rerun resumes the merged tensors")
            same = hf_digest(out) == hf_digest(ref) if formats == "[hf]" else h5_tensors(f"{out}/merged.h5") == ref_h5
            check(same, f"{tag}: the resumed output holds the reference's bytes")
            check(run(["verify", out], check=False).returncode == 0, f"{tag}: the resumed output verifies")
    shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
