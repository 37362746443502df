"""Bad input to the engine's jobs: every case must exit non-zero with a message that names the
file and line (or the option) and says what was wrong."""
import os
import subprocess
import sys
import tempfile

RECALL = os.environ.get("RECALL_BIN", "build/bin/recall")
DATA = os.path.join(os.environ.get("RECALL_SHARED_DIR", "../shared"), "data", "stories260K")


def main():
    failures = []
    with tempfile.TemporaryDirectory() as work:
        model = os.path.join(work, "m")
        subprocess.run([RECALL, "convert", "--from", "llama2c", os.path.join(DATA, "stories260K.bin"),
                        "--out", model, "--tokenizer", os.path.join(DATA, "tok512.model")],
                       check=True, stdout=subprocess.DEVNULL)
        bare = os.path.join(work, "bare")  # the same model without tokenizer.model
        subprocess.run([RECALL, "convert", "--from", "llama2c", os.path.join(DATA, "stories260K.bin"),
                        "--out", bare], check=True, stdout=subprocess.DEVNULL)
        long_ids = ",".join(["5"] * 513)  # max_position_embeddings is 512
        cases = [
            # (name, option, file content, model, expected message parts)
            ("malformed JSON", "--tokens", '{"input_ids": [1, 2]}\n{"input_ids": [1, 2\n', model,
             [":2:", "malformed JSON"]),
            ("not an object", "--tokens", '[1, 2]\n', model, [":1:", "JSON object"]),
            ("token out of vocab", "--tokens", '{"input_ids": [1]}\n\n{"input_ids": [1, 512]}\n', model,
             [":3:", "token id 512", "[0, 512)"]),
            ("negative token", "--tokens", '{"input_ids": [-1]}\n', model, [":1:", "token id -1"]),
            ("non-integer token", "--tokens", '{"input_ids": [1, 2.5]}\n', model, [":1:", "input_ids[1]"]),
            ("empty sample", "--tokens", '{"input_ids": [1]}\n{"input_ids": []}\n', model, [":2:", "empty sample"]),
            ("too long", "--tokens", '{"input_ids": [%s]}\n' % long_ids, model,
             [":1:", "513 tokens", "max_position_embeddings (512)"]),
            ("empty text", "--text", '{"text": ""}\n', model, [":1:", "empty sample"]),
            ("text without tokenizer", "--text", '{"text": "Once upon"}\n', bare, ["tokenizer.model"]),
            ("wrong kind", "--tokens", '{"text": "Once upon"}\n', model, [":1:", "expected a input_ids sample"]),
            ("no sample", "--tokens", '\n\n', model, ["holds no sample"]),
        ]
        for name, option, content, m, parts in cases:
            path = os.path.join(work, "bad.jsonl")
            with open(path, "w") as f:
                f.write(content)
            r = subprocess.run([RECALL, "hidden-states", "--model", m, option, path, "--out",
                                os.path.join(work, "o.safetensors")], capture_output=True, text=True)
            msg = r.stderr.strip()
            ok = r.returncode != 0 and all(p in msg for p in parts) and (path in msg or name == "text without tokenizer")
            print(f"{'ok  ' if ok else 'FAIL'} {name}: rc {r.returncode}: {msg}")
            if not ok:
                failures.append(name)
            if os.path.exists(os.path.join(work, "o.safetensors")):
                failures.append(name + ": output file left behind")
        args_cases = [
            ("bad dtype", ["hidden-states", "--model", model, "--tokens", path, "--out", "x", "--dtype", "int8"],
             "unknown compute dtype 'int8'"),
            ("bad device", ["hidden-states", "--model", model, "--tokens", path, "--out", "x", "--device", "tpu"],
             "unknown device 'tpu'"),
            ("bad batch", ["hidden-states", "--model", model, "--tokens", path, "--out", "x", "--batch", "0"],
             "--batch must be an integer >= 1, got '0'"),
            ("bad token list", ["generate", "--model", model, "--tokens", "1,x"], "'x' is not a token id"),
            ("token out of vocab in prompt", ["generate", "--model", model, "--tokens", "1,600"], "token id 600"),
            ("bad top-p", ["generate", "--model", model, "--tokens", "1", "--top-p", "0"], "--top-p must be in (0, 1]"),
        ]
        for name, argv, part in args_cases:
            r = subprocess.run([RECALL, *argv], capture_output=True, text=True)
            msg = r.stderr.strip()
            ok = r.returncode != 0 and part in msg
            print(f"{'ok  ' if ok else 'FAIL'} {name}: rc {r.returncode}: {msg}")
            if not ok:
                failures.append(name)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
