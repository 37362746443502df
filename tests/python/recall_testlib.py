"""Shared helpers for recall's Python tests: paths from ctest's environment, running the recall
binary (optionally under mpirun), and tiny random Hugging Face models."""
import json
import os
import subprocess
import sys

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
