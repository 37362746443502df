"""safetensors interop with the Python reference implementation (safetensors 0.8, torch and numpy
front-ends), for every dtype recall supports:
  1. files written by Python: `st_tool dump` decodes every value as torch/numpy do (the F8 tensors
     hold all 256 bit patterns; F16/BF16 hold random bits including NaN and infinities);
  2. files written by recall (`st_tool copy`, single and sharded) load in Python with identical
     bytes; the index has the right weight_map and metadata.total_size;
  3. `recall inspect --json --tensors` agrees with what Python wrote.
Exits non-zero on any mismatch and prints what it compared.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save_file as torch_save_file

RECALL = os.environ["RECALL_BIN"]
ST_TOOL = os.path.join(os.path.dirname(RECALL), "st_tool")

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def run(*args):
    p = subprocess.run(list(args), capture_output=True, text=True)
    if p.returncode != 0:
        print("command failed:", " ".join(args), "\n", p.stderr)
        sys.exit(1)
    return p.stdout


TORCH_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "U16": torch.uint16, "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64,
    "U64": torch.uint64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
    "F64": torch.float64, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
NP_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
    "I32": np.int32, "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "F16": np.float16,
    "F32": np.float32, "F64": np.float64,
}


def random_bits(rng, dtype_name, shape):
    """A torch tensor of `shape` whose bytes are random (every bit pattern possible)."""
    dt = TORCH_DTYPES[dtype_name]
    itemsize = torch.empty((), dtype=dt).element_size()
    n = int(np.prod(shape, dtype=np.int64))
    raw = rng.integers(0, 256, size=n * itemsize, dtype=np.uint8)
    if dtype_name == "BOOL":
        raw = raw % 2
    return torch.from_numpy(raw).view(dt).reshape(shape).clone()


def torch_tensors(rng):
    t = {}
    for name in TORCH_DTYPES:
        t[f"rand.{name}"] = random_bits(rng, name, (3, 5))
    # Every bit pattern of the 8-bit floats, and specials of the 16-bit ones.
    t["all.F8_E4M3"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).reshape(16, 16)
    t["all.F8_E5M2"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e5m2).reshape(16, 16)
    t["special.F16"] = torch.tensor([0.0, -0.0, 1.0, 65504.0, float("inf"), -float("inf"), float("nan"), 6e-8], dtype=torch.float16)
    t["special.BF16"] = torch.tensor([0.0, -0.0, 1.0, 3.3895e38, float("inf"), -float("inf"), float("nan"), 1e-40], dtype=torch.bfloat16)
    # Extreme integers (float32 rounding of large 64-bit values must agree).
    t["ext.I64"] = torch.tensor([-(2**63), 2**63 - 1, -1, 0, 2**53 + 1, 123456789012345], dtype=torch.int64)
    t["ext.U64"] = torch.from_numpy(np.array([0, 2**64 - 1, 2**63 + 12345, 2**24 + 1], dtype=np.uint64))
    t["ext.U32"] = torch.from_numpy(np.array([0, 2**32 - 1, 2**24 + 3], dtype=np.uint32))
    # Zero-size and scalar tensors.
    t["zero.F32"] = torch.zeros((0,), dtype=torch.float32)
    t["zero.BF16"] = torch.zeros((3, 0, 2), dtype=torch.bfloat16)
    t["zero.I64"] = torch.zeros((0, 4), dtype=torch.int64)
    t["scalar.F64"] = torch.tensor(2.718281828459045, dtype=torch.float64)
    t["scalar.BF16"] = torch.tensor(-1.5, dtype=torch.bfloat16)
    t["scalar.BOOL"] = torch.tensor(True)
    return t


def np_tensors(rng):
    t = {}
    for name, dt in NP_DTYPES.items():
        t[f"np.{name}"] = random_bits(rng, name, (4, 3)).numpy().astype(dt, copy=True)
    t["np.zero.U16"] = np.zeros((0,), dtype=np.uint16)
    t["np.scalar.I32"] = np.array(-7, dtype=np.int32)
    t["np.scalar.F16"] = np.array(0.333, dtype=np.float16)
    return t


def reference_floats(x):
    """What recall's decode_to_float must give: torch's/numpy's conversion to float32."""
    if isinstance(x, np.ndarray):
        with np.errstate(over="ignore"):  # F64 beyond float32's range becomes +-inf, as in C++
            return x.astype(np.float32).reshape(-1)
    if x.dtype == torch.uint64:
        return x.numpy().astype(np.float32).reshape(-1)
    return x.to(torch.float32).reshape(-1).numpy()


def same_floats(got, want):
    got = np.asarray(got, dtype=np.float32)
    if got.shape != want.shape:
        return False, f"length {got.shape} vs {want.shape}"
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    if not np.array_equal(nan_g, nan_w):
        return False, "NaN positions differ"
    ok = np.array_equal(got[~nan_g], want[~nan_w])
    # Signed zeros must agree too.
    ok = ok and np.array_equal(np.signbit(got[~nan_g]), np.signbit(want[~nan_w]))
    with np.errstate(invalid="ignore"):  # inf - inf
        diff = np.abs(got[~nan_g].astype(np.float64) - want[~nan_w].astype(np.float64))
    diff = diff[np.isfinite(diff)]
    return ok, f"max abs diff {diff.max() if diff.size else 0.0}"


def raw_bytes(x):
    if isinstance(x, np.ndarray):
        return x.tobytes()
    return x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def dtype_of_name(tensor_name):
    return tensor_name.rsplit(".", 1)[-1]


def check_dump(path, tensors, what):
    dump = json.loads(run(ST_TOOL, "dump", path))
    check(sorted(dump) == sorted(tensors), f"{what}: st_tool dump lists the {len(tensors)} tensors")
    for name, x in sorted(tensors.items()):
        d = dump.get(name)
        if d is None:
            continue
        want_dtype = dtype_of_name(name)
        shape = list(x.shape)
        check(d["dtype"] == want_dtype and d["shape"] == shape,
              f"{what}: {name} dtype {d['dtype']} shape {d['shape']} (want {want_dtype} {shape})")
        ok, detail = same_floats(d["values"], reference_floats(x))
        check(ok, f"{what}: {name} {len(d['values'])} values equal torch/numpy's float32 ({detail})")


def check_same_bytes(originals, loaded, what):
    check(sorted(originals) == sorted(loaded), f"{what}: same {len(originals)} tensor names")
    for name, x in sorted(originals.items()):
        y = loaded.get(name)
        if y is None:
            continue
        same = raw_bytes(x) == raw_bytes(y) and list(x.shape) == list(y.shape) and x.dtype == y.dtype
        check(same, f"{what}: {name} {str(y.dtype)} {list(y.shape)} identical bytes")


def check_inspect(path, tensors, metadata, what):
    out = json.loads(run(RECALL, "inspect", "--json", "--tensors", path))
    nbytes = {n: len(raw_bytes(x)) for n, x in tensors.items()}
    by_dtype = {}
    for n, b in nbytes.items():
        by_dtype[dtype_of_name(n)] = by_dtype.get(dtype_of_name(n), 0) + b
    by_dtype = {k: v for k, v in by_dtype.items()}
    check(out["tensor_count"] == len(tensors), f"{what}: inspect tensor_count {out['tensor_count']}")
    check(out["total_bytes"] == sum(nbytes.values()), f"{what}: inspect total_bytes {out['total_bytes']}")
    check(out["bytes_by_dtype"] == by_dtype, f"{what}: inspect bytes_by_dtype {out['bytes_by_dtype']}")
    if metadata is not None:
        check(out["metadata"] == metadata, f"{what}: inspect metadata {out['metadata']}")
    listed = {t["name"]: t for t in out["tensors"]}
    ok = all(listed[n]["dtype"] == dtype_of_name(n) and listed[n]["shape"] == list(x.shape)
             and listed[n]["bytes"] == nbytes[n] for n, x in tensors.items() if n in listed)
    check(ok and sorted(listed) == sorted(tensors), f"{what}: inspect --tensors name/dtype/shape/bytes")


def main():
    rng = np.random.default_rng(20251)
    with tempfile.TemporaryDirectory(prefix="recall-interop-") as tmp:
        # ---- 1. Python writes, recall reads ----
        tt = torch_tensors(rng)
        torch_meta = {"format": "pt", "source": "test_safetensors_interop", "note": "ünïcode \"quoted\""}
        torch_path = os.path.join(tmp, "torch.safetensors")
        torch_save_file(tt, torch_path, metadata=torch_meta)
        nt = np_tensors(rng)
        np_meta = {"format": "np", "step": "42"}
        np_path = os.path.join(tmp, "numpy.safetensors")
        np_save_file(nt, np_path, metadata=np_meta)
        dtypes_covered = sorted({dtype_of_name(n) for n in tt})
        check(dtypes_covered == sorted(TORCH_DTYPES), f"torch file covers all 15 dtypes: {dtypes_covered}")

        check_dump(torch_path, tt, "torch file")
        check_dump(np_path, nt, "numpy file")
        check_inspect(torch_path, tt, torch_meta, "torch file")
        check_inspect(np_path, nt, np_meta, "numpy file")

        # ---- 2. recall writes, Python reads ----
        single = os.path.join(tmp, "copy-single")
        run(ST_TOOL, "copy", torch_path, single)
        check(sorted(os.listdir(single)) == ["model.safetensors"], f"single copy writes one file: {os.listdir(single)}")
        single_file = os.path.join(single, "model.safetensors")
        check_same_bytes(tt, torch_load_file(single_file), "recall single file via safetensors.torch")
        with safe_open(single_file, framework="pt") as f:
            check(f.metadata() == {"format": "pt"}, f"recall's file carries metadata {f.metadata()}")
        header_len = int.from_bytes(open(single_file, "rb").read(8), "little")
        check(header_len % 8 == 0, f"recall's header length {header_len} is a multiple of 8")
        check_dump(single_file, tt, "recall single file")

        np_single = os.path.join(tmp, "copy-np")
        run(ST_TOOL, "copy", np_path, np_single)
        check_same_bytes(nt, np_load_file(os.path.join(np_single, "model.safetensors")),
                         "recall copy of numpy file via safetensors.numpy")

        sharded = os.path.join(tmp, "copy-sharded")
        shard_bytes = 200
        written = run(ST_TOOL, "copy", torch_path, sharded, "--shard-bytes", str(shard_bytes)).split()
        files = sorted(f for f in os.listdir(sharded) if f.endswith(".safetensors"))
        n = len(files)
        check(n >= 3 and files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)],
              f"sharded copy wrote {n} shards named model-0000i-of-{n:05d}")
        check(sorted(os.path.basename(w) for w in written) == files, "st_tool reports the shard files")
        index = json.load(open(os.path.join(sharded, "model.safetensors.index.json")))
        total = sum(len(raw_bytes(x)) for x in tt.values())
        check(index["metadata"]["total_size"] == total,
              f"index total_size {index['metadata']['total_size']} == {total}")
        check(sorted(index["weight_map"]) == sorted(tt), f"index weight_map lists all {len(tt)} tensors")
        loaded = {}
        placement_ok = True
        for fname in files:
            path = os.path.join(sharded, fname)
            with safe_open(path, framework="pt") as f:
                keys = list(f.keys())
                placement_ok &= all(index["weight_map"][k] == fname for k in keys)
                data_bytes = sum(len(raw_bytes(f.get_tensor(k))) for k in keys)
                # Greedy limit: a shard only exceeds the limit when it holds one tensor.
                placement_ok &= data_bytes <= shard_bytes or len(keys) == 1
            loaded.update(torch_load_file(path))
        check(placement_ok, "every tensor is in the shard the index names; shards respect the limit")
        check_same_bytes(tt, loaded, "recall shards via safetensors.torch")
        check_dump(sharded, tt, "recall sharded directory (Checkpoint over the index)")
        for fname in files:
            path = os.path.join(sharded, fname)
            shard_tensors = {k: tt[k] for k, v in index["weight_map"].items() if v == fname}
            check_inspect(path, shard_tensors, {"format": "pt"}, f"shard {fname}")

    print(f"\n{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
