"""The model engine (librecall_engine.so, which links libtorch) is loaded only by commands that run
a model. Checks: the `recall` executable does not link libtorch; a linear merge (2 ranks) succeeds
with the engine made unfindable and leaves a verified output; a RECALL merge in the same state
fails on every rank (the job's error says 2 of 2) naming the path it tried, and leaves no output; a library that
is not the engine, named by RECALL_ENGINE_LIBRARY, is refused by name; with the engine present the
RECALL merge runs."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, run, tiny_llama, write_jsonl, Checks  # noqa: E402

check = Checks()


def main():
    libs = subprocess.run(["ldd", BIN], capture_output=True, text=True, check=True).stdout
    check("libtorch" not in libs and "libc10" not in libs, "the recall executable does not link libtorch")
    engine = os.path.join(os.path.dirname(BIN), "..", "lib", "librecall_engine.so")
    check(os.path.exists(engine), f"the engine library is built next to the core library ({engine})")

    tmp = tempfile.mkdtemp(prefix="recall-engine-loading-")
    try:
        models = []
        for i, n in enumerate(["a", "b"]):
            tiny_llama(f"{tmp}/{n}", seed=i, layers=2)
            models.append(n)
        write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1 + (3 * i + j) % 120 for j in range(6 + i % 5)]}
                                          for i in range(12)])
        head = "models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in models)

        def config(name, body):
            path = f"{tmp}/{name}.yaml"
            with open(path, "w") as f:
                f.write(head + body + f"\noutput: {{dir: {tmp}/out-{name}}}\n")
            return path

        missing = f"{tmp}/nowhere/librecall_engine.so"
        env = {"RECALL_ENGINE_LIBRARY": missing}
        lin = config("linear", "method: linear")
        p = run(["merge", "--config", lin, "--quiet"], np=2, check=False, env=env)
        check(p.returncode == 0, f"a linear merge runs without the engine (exit {p.returncode}) {p.stderr[-300:]}")
        v = run(["verify", f"{tmp}/out-linear"], check=False, env=env)
        check(v.returncode == 0, "its output verifies")

        rec = config("recall", f"method: recall\nreference: b\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 3}}")
        p = run(["merge", "--config", rec, "--quiet"], np=2, check=False, env=env)
        check(p.returncode != 0, f"a RECALL merge without the engine fails (exit {p.returncode})")
        check("model engine" in p.stderr and f"{missing}: no such file" in p.stderr and
              "(2 of 2 ranks failed)" in p.stderr, f"on both ranks, naming the path it tried: {p.stderr[:400]}")
        check(not os.path.exists(f"{tmp}/out-recall/COMPLETE") and
              not os.path.exists(f"{tmp}/out-recall/hf/model.safetensors"),
              "and leaves no output that looks complete")

        core = os.path.join(os.path.dirname(BIN), "..", "lib", "librecall_core.so")
        p = run(["eval", "--model", f"{tmp}/a", "--data", f"{tmp}/data.jsonl"], check=False,
                env={"RECALL_ENGINE_LIBRARY": core})
        check(p.returncode != 0 and "is not recall's model engine" in p.stderr and core in p.stderr,
              f"a library that is not the engine is refused by name: {p.stderr.strip()[-200:]}")

        shutil.rmtree(f"{tmp}/out-recall", ignore_errors=True)
        p = run(["merge", "--config", rec, "--quiet"], np=2, check=False)
        check(p.returncode == 0, f"with the engine found next to the core library, the RECALL merge runs "
                                 f"(exit {p.returncode}) {p.stderr[-300:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
