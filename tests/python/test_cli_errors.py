"""The CLI on bad input: `recall inspect` of broken files and model directories exits non-zero
with a message naming the file and the problem; `recall convert` of a truncated llama2.c file
fails cleanly and leaves no output that looks complete; unknown options and commands are clear
errors; `recall --help` and every `recall <cmd> --help` exit 0. Prints each comparison.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

RECALL = os.environ["RECALL_BIN"]
DATA = os.path.join(os.environ["RECALL_SHARED_DIR"], "data", "stories260K")

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def recall(*args):
    return subprocess.run([RECALL, *args], capture_output=True, text=True, timeout=120)


def expect_failure(args, fragments, what):
    p = recall(*args)
    err = p.stderr.strip()
    missing = [f for f in fragments if f not in err]
    check(p.returncode != 0 and not missing and p.returncode < 128,
          f"{what}: exit {p.returncode}, stderr names {fragments}" +
          (f" -- MISSING {missing} in: {err!r}" if missing else ""))
    return p


def tiny_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
            "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 32, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False}


def tiny_tensors():
    H, I, V, KV = 16, 24, 32, 8
    t = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H)}
    for l in range(2):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                  p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (KV, H),
                  p + "self_attn.v_proj.weight": (KV, H), p + "self_attn.o_proj.weight": (H, H),
                  p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                  p + "mlp.down_proj.weight": (H, I)})
    return {k: np.zeros(v, dtype=np.float16) for k, v in t.items()}


def write_model(d, config, tensors):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def main():
    with tempfile.TemporaryDirectory(prefix="recall-cli-") as tmp:
        # ---- a valid tiny model first, so that the failures below are the edits' doing ----
        good = os.path.join(tmp, "good")
        write_model(good, tiny_config(), tiny_tensors())
        p = recall("inspect", good)
        check(p.returncode == 0, f"inspect of a valid tiny llama exits 0 ({p.stderr.strip()})")

        # ---- corrupt safetensors files ----
        st = os.path.join(good, "model.safetensors")
        blob = open(st, "rb").read()
        trunc = os.path.join(tmp, "truncated.safetensors")
        open(trunc, "wb").write(blob[:-10])
        expect_failure(["inspect", trunc], [trunc, "run past the end of the data buffer", "truncated"],
                       "inspect truncated .safetensors")
        badlen = os.path.join(tmp, "badlen.safetensors")
        open(badlen, "wb").write((10**6).to_bytes(8, "little") + blob[8:200])
        expect_failure(["inspect", badlen], [badlen, "header length 1000000 is larger than the file"],
                       "inspect header length past the end")
        notst = os.path.join(tmp, "passwd.safetensors")
        open(notst, "wb").write(b"root:x:0:0:root:/root:/bin/bash\n")
        p = expect_failure(["inspect", notst], [notst, "not a safetensors file"], "inspect of a password file")
        check("root:" not in p.stderr and str(int.from_bytes(b"root:x:0", "little")) not in p.stderr,
              "inspect of a file that is not safetensors prints none of its bytes")
        notjson = os.path.join(tmp, "notjson.safetensors")
        hdr = b"{this is not json}"
        open(notjson, "wb").write(len(hdr).to_bytes(8, "little") + hdr)
        expect_failure(["inspect", notjson], [notjson, "header is not valid JSON"], "inspect header not JSON")
        tiny = os.path.join(tmp, "tiny.safetensors")
        open(tiny, "wb").write(b"\x01\x02")
        expect_failure(["inspect", tiny], [tiny, "too short"], "inspect 2-byte file")
        expect_failure(["inspect", os.path.join(tmp, "absent")], [os.path.join(tmp, "absent"), "does not exist"],
                       "inspect missing path")

        corrupt_dir = os.path.join(tmp, "corrupt-dir")
        shutil.copytree(good, corrupt_dir)
        cst = os.path.join(corrupt_dir, "model.safetensors")
        open(cst, "wb").write(blob[:len(blob) // 2])
        expect_failure(["inspect", corrupt_dir], [cst, "truncated"], "inspect model dir with a truncated shard")

        # ---- config.json problems ----
        cfg_dir = os.path.join(tmp, "no-hidden")
        cfg = tiny_config()
        del cfg["hidden_size"]
        write_model(cfg_dir, cfg, tiny_tensors())
        expect_failure(["inspect", cfg_dir], [os.path.join(cfg_dir, "config.json"), "missing field 'hidden_size'"],
                       "inspect config missing a field")
        cfg = tiny_config()
        cfg["num_hidden_layers"] = "2"
        write_model(cfg_dir, cfg, tiny_tensors())
        expect_failure(["inspect", cfg_dir],
                       [os.path.join(cfg_dir, "config.json"), "field 'num_hidden_layers' must be an integer, got \"2\""],
                       "inspect config with a mistyped field")
        cfg = tiny_config()
        cfg["model_type"] = "gpt_neox"
        write_model(cfg_dir, cfg, tiny_tensors())
        expect_failure(["inspect", cfg_dir], ["unsupported architecture 'gpt_neox'", "supported:", "qwen3"],
                       "inspect unsupported architecture")
        with open(os.path.join(cfg_dir, "config.json"), "w") as f:
            f.write("{\"model_type\": \"llama\",")
        expect_failure(["inspect", cfg_dir], [os.path.join(cfg_dir, "config.json"), "not valid JSON"],
                       "inspect config not JSON")

        # ---- tensors that do not fit the config ----
        shape_dir = os.path.join(tmp, "wrong-shape")
        t = tiny_tensors()
        t["model.layers.1.mlp.down_proj.weight"] = np.zeros((16, 20), dtype=np.float16)
        del t["model.layers.0.self_attn.v_proj.weight"]
        write_model(shape_dir, tiny_config(), t)
        expect_failure(["inspect", shape_dir],
                       [shape_dir, "2 problems",
                        "tensor 'model.layers.1.mlp.down_proj.weight' has wrong shape; expected [16, 24], got [16, 20]",
                        "missing tensor 'model.layers.0.self_attn.v_proj.weight'"],
                       "inspect wrong shape + missing tensor, both reported")

        pickled = os.path.join(tmp, "pickled")
        os.makedirs(pickled)
        shutil.copy(os.path.join(good, "config.json"), pickled)
        open(os.path.join(pickled, "pytorch_model.bin"), "wb").write(b"PK\x03\x04")
        expect_failure(["inspect", pickled], [pickled, "pickled", "safetensors"], "inspect pickled-only model")

        # ---- convert of a truncated llama2.c checkpoint ----
        src = open(os.path.join(DATA, "stories260K.bin"), "rb").read()
        for cut in (len(src) - 4, len(src) // 2, 20):
            bad = os.path.join(tmp, f"cut{cut}.bin")
            open(bad, "wb").write(src[:cut])
            out = os.path.join(tmp, f"out{cut}")
            expect_failure(["convert", "--from", "llama2c", bad, "--out", out], [bad, f"{cut} bytes"],
                           f"convert llama2.c file cut to {cut} bytes")
            left = sorted(os.listdir(out)) if os.path.isdir(out) else []
            looks_complete = "config.json" in left or any(f.endswith(".safetensors") for f in left)
            check(not looks_complete, f"convert of the {cut}-byte file leaves no complete-looking output: {left}")
        expect_failure(["convert", "--from", "gguf", os.path.join(DATA, "stories260K.bin"), "--out",
                        os.path.join(tmp, "o")], ["unsupported input format 'gguf'", "llama2c"],
                       "convert from an unsupported format")
        expect_failure(["convert", "--from", "llama2c", os.path.join(tmp, "nope.bin"), "--out",
                        os.path.join(tmp, "o2")], [os.path.join(tmp, "nope.bin")], "convert of a missing file")

        # ---- options and commands ----
        expect_failure(["inspect", good, "--bogus"], ["unknown option '--bogus'", "recall inspect --help"],
                       "unknown option")
        expect_failure(["inspect"], ["missing argument PATH"], "missing positional argument")
        expect_failure(["convert", os.path.join(DATA, "stories260K.bin")], ["missing option --"],
                       "missing required option")
        expect_failure(["inspect", good, "--tensors=yes"], ["flag '--tensors' takes no value"], "flag with a value")
        expect_failure(["convert", "--out"], ["option '--out' needs a value"], "option without its value")
        expect_failure(["inspect", good, "extra"], ["unexpected argument 'extra'"], "extra positional")
        p = recall("frobnicate")
        check(p.returncode != 0 and "unknown command 'frobnicate'" in p.stderr,
              f"unknown command: exit {p.returncode}, {p.stderr.splitlines()[0] if p.stderr else ''!r}")

        p = recall("--help")
        check(p.returncode == 0 and "usage: recall" in p.stdout, f"recall --help exits {p.returncode}")
        commands = re.findall(r"^  (\S+)\s", p.stdout.split("commands:", 1)[-1], flags=re.M)
        check({"inspect", "convert"} <= set(commands), f"recall --help lists commands {commands}")
        continuations = 0
        for cmd in commands + ["sweep plan", "sweep run", "sweep report", "sweep resolve"]:
            p = recall(*cmd.split(), "--help")
            check(p.returncode == 0 and f"usage: recall {cmd}" in p.stdout,
                  f"recall {cmd} --help exits {p.returncode} and prints its usage")
            # Wrapped at 100 columns (piped output), option help continuing under its own column.
            long = [l for l in p.stdout.splitlines() if len(l) > 100 and " " in l.strip()]
            options = [l for head in ("\narguments:\n", "\noptions:\n") if head in p.stdout
                       for l in p.stdout.split(head, 1)[1].split("\n\n", 1)[0].splitlines()]
            unindented = [l for l in options if not re.match(r"  \S", l) and not l.startswith(" " * 28 + l.strip())]
            continuations += sum(1 for l in options if l.startswith(" " * 28) and l.strip())
            check(not long and not unindented,
                  f"recall {cmd} --help: lines <= 100 columns, continuations indented to column 28"
                  + (f" -- too long {long}, not indented {unindented}" if long or unindented else ""))
        check(continuations >= 5, f"some option help wraps onto indented lines ({continuations})")
        p = recall("inspect", "--help")
        check(all(o in p.stdout for o in ("--json", "--tensors", "PATH")), "inspect --help describes --json, --tensors, PATH")
        p = recall("convert", "--help")
        check(all(o in p.stdout for o in ("--from", "--out", "--tokenizer")), "convert --help describes --from, --out, --tokenizer")

    print(f"\n{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
