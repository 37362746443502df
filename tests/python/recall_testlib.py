"""Shared helpers for recall's Python tests: paths from ctest's environment, running the recall
binary (optionally under mpirun), and tiny random Hugging Face models."""
import json
import os
import subprocess
import sys

import numpy as np

BIN = os.path.abspath(os.environ.get("RECALL_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin/recall")))
SHARED = os.environ.get("RECALL_SHARED_DIR", os.path.join(os.path.dirname(__file__), "../../../shared"))
MPIRUN = os.environ.get("RECALL_MPIRUN", "mpirun")


def run(args, np=None, check=True, env=None):
    """Runs recall with args; under `mpirun -np N --oversubscribe` when np is given."""
    cmd = [BIN] + list(args)
    if np is not None:
        cmd = [MPIRUN, "-np", str(np), "--oversubscribe"] + cmd
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
             OMPI_MCA_rmaps_base_oversubscribe="1")
    if env:
        e.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise AssertionError(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return p


def tiny_llama(path, seed, vocab=128, hidden=64, layers=4, heads=4, kv_heads=2, inter=96, dtype="bfloat16",
               base_state=None, noise=0.0):
    """Saves a random Llama (or base_state + noise, for 'fine-tuned' variants) with non-trivial norms."""
    import torch
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                                   num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=kv_heads, max_position_embeddings=128,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if base_state is not None:
                v.copy_(base_state[k].float() + noise * torch.randn(v.shape))
            elif k.endswith("norm.weight"):
                v.copy_(1 + 0.1 * torch.randn(v.shape))
    model.save_pretrained(path, safe_serialization=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def tiny_family(tmp, names="abc"):
    """{tmp}/base (seed 0, 4 blocks) and, for each of `names`, {tmp}/<name>: base + 0.02 noise (seed
    1, 2, ...), the "fine-tuned experts" of the fault tests, and {tmp}/data.jsonl: 24 samples of 13
    tokens (BOS + 12 random ids, numpy seed 1)."""
    import numpy as np
    base = tiny_llama(f"{tmp}/base", seed=0, layers=4)
    for i, n in enumerate(names):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, base_state=base, noise=0.02)
    rng = np.random.default_rng(1)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(24)])


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


class Checks:
    """Named checks printed as they run ("ok    ..." / "FAIL  ..."); finish() exits 1 if any failed."""

    def __init__(self):
        self.failures = []

    def __call__(self, ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            self.failures.append(what)

    def finish(self):
        if self.failures:
            print(f"{len(self.failures)} check(s) failed")
            sys.exit(1)
        print("all checks passed")


# ---- independent references for RECALL (docs/ALGORITHM.md §1-§3), in numpy -----------------------

class Mt19937_64:
    """std::mt19937_64 (its output sequence is fixed by the C++ standard), in pure Python."""
    N, M, MASK = 312, 156, (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.MASK]
        for i in range(1, self.N):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.index = self.N

    def next_u64(self):
        if self.index >= self.N:
            mt, upper, lower = self.mt, 0xFFFFFFFF80000000, 0x7FFFFFFF
            for i in range(self.N):
                y = (mt[i] & upper) | (mt[(i + 1) % self.N] & lower)
                mt[i] = mt[(i + self.M) % self.N] ^ (y >> 1) ^ (0xB5026F5AA96619E9 if y & 1 else 0)
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK

    def uniform(self):
        """recall's portable uniform double in [0, 1): the top 53 bits times 2^-53."""
        return (self.next_u64() >> 11) * 2.0 ** -53


def _sqdist(x, c):
    """Squared distances of every row of x [N, H] to c [H], summed in dimension order."""
    s = np.zeros(x.shape[0])
    for d in range(x.shape[1]):
        s += (x[:, d] - c[d]) ** 2
    return s


def kmeans_typical(x, k, seed, iterations=100):
    """recall's typical-sample selection (docs/ALGORITHM.md §1), written from the documented rules:
    k-means++ seeding with mt19937_64, Lloyd with empty-cluster reseeding, then in cluster order the
    nearest sample not yet taken. Returns the sample index of each cluster."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    rng = Mt19937_64(seed)
    first = min(int(rng.uniform() * n), n - 1)
    seeds, chosen = [first], {first}
    d2 = _sqdist(x, x[first])
    while len(seeds) < k:
        total = 0.0
        for v in d2:
            total += v
        u = rng.uniform()
        pick = -1
        if total > 0:
            target, run = u * total, 0.0
            for i in range(n):
                if d2[i] <= 0:
                    continue
                run += d2[i]
                if run > target:
                    pick = i
                    break
            if pick < 0:
                pick = max(i for i in range(n) if d2[i] > 0)
        if pick < 0 or pick in chosen:
            pick = min(i for i in range(n) if i not in chosen)
        seeds.append(pick)
        chosen.add(pick)
        d2 = np.minimum(d2, _sqdist(x, x[pick]))
    cent = x[seeds].copy()

    def assign():
        dist = np.stack([_sqdist(x, cent[j]) for j in range(k)], 1)  # [N, K]
        a = dist.argmin(1)  # first minimum: ties to the lowest cluster index
        return a, dist[np.arange(n), a]

    a, dist = assign()
    for _ in range(iterations):
        count = np.bincount(a, minlength=k)
        for j in range(k):
            if count[j] > 0:
                continue
            far, far_d = -1, -1.0
            for i in range(n):
                if count[a[i]] > 1 and dist[i] > far_d:
                    far, far_d = i, dist[i]
            count[a[far]] -= 1
            a[far], count[j], dist[far] = j, 1, 0.0
        for j in range(k):
            s = np.zeros(x.shape[1])
            for i in range(n):
                if a[i] == j:
                    s += x[i]
            cent[j] = s / count[j]
        new_a, dist = assign()
        changed = not np.array_equal(new_a, a)
        a = new_a
        if not changed:
            break
    taken, out = set(), []
    for j in range(k):
        d = _sqdist(x, cent[j])
        best = min((i for i in range(n) if i not in taken), key=lambda i: (d[i], i))
        taken.add(best)
        out.append(best)
    return out


def block_means_hf(model_dir, samples, pooling="mean_skip_first"):  # the config's default
    """[L, N, H] float64: the mean over tokens of every block's output (before the final norm) for
    each sample, from transformers in float32, one unpadded sample at a time (so the mean is over
    exactly the sample's tokens). pooling: "mean" (every token), "mean_skip_first" (all but the
    first; a 1-token sample keeps it) or "last" (the last token)."""
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.model.layers]
    reps = []
    with torch.no_grad():
        for ids in samples:
            outs.clear()
            model(torch.tensor([ids]))
            keep = {"mean": slice(None), "last": slice(-1, None),
                    "mean_skip_first": slice(1 if len(ids) > 1 else 0, None)}[pooling]
            reps.append([o.reshape(len(ids), -1)[keep].mean(0).double().numpy() for o in outs])
    for h in hooks:
        h.remove()
    return np.stack([np.stack([r[l] for r in reps]) for l in range(len(model.model.layers))])


def median_sq(rows):
    """numpy median of the full matrix of squared distances among the rows (diagonal included)."""
    d2 = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    return float(np.median(d2))


def rbf_similarity(reps, ref, sigma2=None, gamma=None):
    """reps [M, K, H] of one block -> s_m = mean_x exp(-||r_m(x) - r_ref(x)||^2 / (2 sigma2)) (or
    exp(-gamma d^2))."""
    d2 = ((reps - reps[ref][None]) ** 2).sum(-1)  # [M, K]
    scale = gamma if gamma is not None else 1.0 / (2.0 * sigma2)
    return np.exp(-d2 * scale).mean(1)


def _center(g):
    n = g.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ g @ h


def cka(gx, gy):
    """CKA of two Gram matrices: <HKH, HLH>_F / (||HKH||_F ||HLH||_F)."""
    cx, cy = _center(gx), _center(gy)
    return float((cx * cy).sum() / (np.linalg.norm(cx) * np.linalg.norm(cy)))


def gram_rbf(x, threshold):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * threshold ** 2 * np.median(d2)))


def softmax(s, tau):
    z = np.exp((np.asarray(s) - np.max(s)) / tau)
    return z / z.sum()


def weighted_bf16(tensors, w):
    """sum_m w_m P_m accumulated in float32 in model order, rounded to bfloat16 (recall's RECALL merge)."""
    import torch
    acc = torch.zeros(tensors[0].shape, dtype=torch.float32)
    for t, wm in zip(tensors, w):
        acc += torch.tensor(float(wm), dtype=torch.float32) * t.float()
    return acc.to(torch.bfloat16)


def bf16_ulps(a, b):
    """Elementwise distance in bf16 units in the last place (same-sign values)."""
    import torch
    return (a.view(torch.int16).int() - b.view(torch.int16).int()).abs()


def check_weighted_bf16(got, tensors, w, weight_tol):
    """Compares a merged bf16 tensor with bf16(sum_m w_m P_m) for weights w known to weight_tol.
    Returns (elements beyond the bound, elements not bit-equal, worst distance in ulp). The bound
    per element is 1 bf16 ulp of the result plus weight_tol * sum_m |P_m|: where the sum nearly
    cancels, a weight difference of 1e-8 moves the result by several of its (tiny) ulps."""
    import torch
    want = weighted_bf16(tensors, w)
    ulp_got = (torch.bitwise_xor(got.view(torch.int16), torch.tensor(1, dtype=torch.int16)).view(torch.bfloat16).float()
               - got.float()).abs()
    spread = sum(t.float().abs() for t in tensors)
    beyond = int(((got.float() - want.float()).abs() > ulp_got + weight_tol * spread).sum())
    d = bf16_ulps(want, got)
    return beyond, int((d > 0).sum()), int(d.max())
