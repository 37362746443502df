"""The memory plan is an upper bound (issue 15): on every rank, the peak of resident anonymous
memory (sampled from /proc/self/status, report.json "memory") stays at or below the plan the job
printed, for row-wise and whole-tensor methods, RECALL and the data-aware methods (RegMean and RegMean++
resident and streaming, Fisher, AIM), on 1 and 2 ranks. The models have a
large vocabulary so that the merge's buffers (and TIES's working memory) dominate the program's
own memory: an underestimated term shows. Prints plan vs measured per rank."""
import json
import os
import tempfile

from recall_testlib import Checks, run, tiny_llama, write_jsonl


def main():
    check = Checks()
    tmp = tempfile.mkdtemp(prefix="recall-memplan-")
    # vocab 32000 x hidden 256: embedding and lm_head of 8.2M elements (16 MB in bf16) each.
    base = tiny_llama(f"{tmp}/base", seed=0, vocab=32000, hidden=256, inter=512, layers=2, heads=4, kv_heads=2)
    for i, n in enumerate(["a", "b"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, vocab=32000, hidden=256, inter=512, layers=2, heads=4, kv_heads=2,
                   base_state=base, noise=0.01)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + [(7 * i + j) % 31000 + 3 for j in range(12)]}
                                      for i in range(64)])
    cases = [
        ("linear", 2, "method: linear\nparallel: {merge_chunk_bytes: 8MiB}"),
        ("linear", 1, "method: linear"),
        ("ties", 2, "method: ties\nbase: base\nparams: {density: 0.5}"),
        ("slerp", 2, "method: slerp\nbase: base\nparams: {t: 0.3}", ["base", "a"]),
        ("recall", 2, "method: recall\ndata: DATA\ntypical: {clusters: 8}"),
        ("recall", 2, "method: recall\ndata: DATA\ntypical: {clusters: 8}\nparallel: {stages: 2, stream_samples: 8}"),
        # Data-aware methods: Gram matrices held per block (resident) or one block (streaming) and
        # the solves' float64 buffers; each model's Fisher pass; the base's |x| sums for AIM.
        ("regmean", 2, "method: regmean\ndata: DATA"),
        ("regmean", 2, "method: regmean\ndata: DATA\nparallel: {stages: 2, stream_samples: 8}"),
        # RegMean++: every stream held (resident) or bounded (streaming), the merged block in float32.
        ("regmean_plusplus", 2, "method: regmean_plusplus\ndata: DATA"),
        ("regmean_plusplus", 2, "method: regmean_plusplus\ndata: DATA\nparallel: {stages: 2, stream_samples: 8}"),
        ("fisher", 2, "method: fisher\ndata: DATA\ncalibration: {samples: 16}"),
        ("task_arithmetic", 2, "method: task_arithmetic\nbase: base\ndata: DATA\naim: {omega: 0.4}"),
    ]
    for k, case in enumerate(cases):
        method, np_, extra = case[:3]
        names = case[3] if len(case) > 3 else ["base", "a", "b"]
        cfg = f"{tmp}/c{k}.yaml"
        with open(cfg, "w") as f:
            f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in names) +
                    extra.replace("DATA", f"{tmp}/data.jsonl") + f"\noutput: {{dir: {tmp}/out{k}}}\n")
        run(["merge", "--config", cfg, "--quiet"], np=np_)
        report = json.load(open(f"{tmp}/out{k}/report.json"))
        for m in report["memory"]:
            line = (f"{method} ({extra.splitlines()[-1]}) on {np_} rank(s), rank {m['rank']}: plan "
                    f"{m['planned_bytes'] / 1e6:.1f} MB, anonymous peak {m['peak_anon_bytes'] / 1e6:.1f} MB, "
                    f"file-backed peak {m['peak_file_bytes'] / 1e6:.1f} MB")
            check(0 < m["peak_anon_bytes"] <= m["planned_bytes"], line)
    check.finish()


if __name__ == "__main__":
    main()
