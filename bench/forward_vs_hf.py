"""Forward tokens/s of recall vs Hugging Face transformers (PyTorch eager, SDPA) on the same CPU,
same threads, float32, side by side: stories260K (converted) and a ~100M-parameter random Llama.
Usage: python bench/forward_vs_hf.py [--threads 2] [--recall-build build] [--shared ../shared]"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch
import transformers

transformers.utils.logging.disable_progress_bar()


def hf_tokens_per_s(model_dir, batch, seq, iters):
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="sdpa").eval()
    torch.manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (batch, seq))
    with torch.inference_mode():
        model(input_ids=ids)
        t0 = time.perf_counter()
        for _ in range(iters):
            model(input_ids=ids)
        s = time.perf_counter() - t0
    return batch * seq * iters / s


def recall_tokens_per_s(bench, model_dir, batch, seq, iters, threads):
    out = subprocess.run([bench, model_dir, str(batch), str(seq), str(iters), str(threads)],
                         check=True, capture_output=True, text=True).stdout
    print("  " + out.strip())
    return float(out.split("tokens/s")[0].split(":")[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side counts")
    ap.add_argument("--recall-build", default=os.environ.get("RECALL_BUILD_DIR", "build"))
    ap.add_argument("--shared", default=os.environ.get("RECALL_SHARED_DIR", "../shared"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench = os.path.join(args.recall_build, "bin", "bench_forward")
    recall = os.path.join(args.recall_build, "bin", "recall")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        stories = os.path.join(work, "stories260K")
        data = os.path.join(args.shared, "data", "stories260K")
        subprocess.run([recall, "convert", "--from", "llama2c", os.path.join(data, "stories260K.bin"),
                        "--out", stories], check=True, stdout=subprocess.DEVNULL)
        big = os.path.join(work, "llama100m")
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                                       num_attention_heads=12, num_key_value_heads=4, vocab_size=32000,
                                       max_position_embeddings=1024, tie_word_embeddings=False)
        m = transformers.LlamaForCausalLM(cfg)
        params = sum(p.numel() for p in m.parameters())
        m.save_pretrained(big)
        del m
        for name, path, batch, seq, iters in [("stories260K", stories, 8, 256, 20),
                                              (f"llama {params / 1e6:.0f}M", big, 4, 128, 3)]:
            print(f"{name}: batch {batch} x {seq} tokens, float32, {args.threads} threads")
            # Alternate the two, best of `rounds` each: robust to other load on a shared machine.
            r = h = 0.0
            for _ in range(args.rounds):
                r = max(r, recall_tokens_per_s(bench, path, batch, seq, iters, args.threads))
                hr = hf_tokens_per_s(path, batch, seq, iters)
                print(f"  HF transformers {transformers.__version__} forward: {hr:.1f} tokens/s")
                h = max(h, hr)
            rows.append((name, r, h))
    print(f"\nbest of {args.rounds} rounds, {args.threads} threads, float32\n| model | recall tokens/s | HF tokens/s | ratio |\n|---|---|---|---|")
    for name, r, h in rows:
        print(f"| {name} | {r:.0f} | {h:.0f} | {r / h:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
