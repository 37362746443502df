"""Docs that agree with the code (issues 18, 19, 21): every merge config in README.md, docs/ and
configs/ decodes (`recall config`), every sweep spec in the docs plans (`recall sweep plan`), and
every config key the docs name in backticks (`typical.clusters`, `params.density`, ...) is a key
of the config's field table (docs/CONFIG.md, which test_structure keeps equal to the code) or a
parameter of a registered method. Prints each snippet it ran; exits 1 on the first disagreement
of each kind."""
import glob
import os
import re
import shutil
import tempfile

from recall_testlib import Checks, run

SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
SECTIONS = ("typical", "kernel", "recall", "parallel", "output", "params")


def doc_files():
    return [os.path.join(SRC, "README.md")] + sorted(glob.glob(os.path.join(SRC, "docs", "*.md")))


def yaml_blocks(path):
    text = open(path).read()
    for m in re.finditer(r"```yaml\n(.*?)```", text, re.S):
        yield text.count("\n", 0, m.start()) + 2, m.group(1)


def known_keys():
    """Config keys and method parameter names from docs/CONFIG.md (generated from the code)."""
    ref = open(os.path.join(SRC, "docs", "CONFIG.md")).read()
    keys = set(re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)?)` \|", ref, re.M))
    params = set(re.findall(r"^\| `([a-z_0-9]+)` \| (?:per model|shared) \|", ref, re.M))
    return keys, params


def main():
    check = Checks()
    keys, params = known_keys()
    check(len(keys) > 20 and {"weight", "density", "t"} <= params,
          f"docs/CONFIG.md lists {len(keys)} keys and {len(params)} method parameters")
    tmp = tempfile.mkdtemp(prefix="recall-docs-")
    n = 0
    for path in doc_files() + sorted(glob.glob(os.path.join(SRC, "configs", "*.yaml"))):
        rel = os.path.relpath(path, SRC)
        blocks = [(1, open(path).read())] if path.endswith(".yaml") else list(yaml_blocks(path))
        for line, text in blocks:
            n += 1
            where = f"{rel}:{line}"
            if re.search(r"^models:", text, re.M):
                f = os.path.join(tmp, f"snippet{n}.yaml")
                open(f, "w").write(text)
                p = run(["config", "--config", f], check=False)
                check(p.returncode == 0, f"{where}: the merge config decodes"
                      + ("" if p.returncode == 0 else ": " + p.stderr.strip()))
            elif re.search(r"^(grid|points):", text, re.M):
                # A sweep spec: plan it against a copy of the base config it names.
                d = os.path.join(tmp, f"sweep{n}")
                os.makedirs(d)
                base = re.search(r"^base_config:\s*(\S+)", text, re.M)
                if base:
                    shutil.copy(os.path.join(SRC, "configs", os.path.basename(base.group(1))), d)
                open(os.path.join(d, "spec.yaml"), "w").write(text)
                p = run(["sweep", "plan", os.path.join(d, "spec.yaml"), "--out", os.path.join(d, "out")], check=False)
                check(p.returncode == 0, f"{where}: the sweep spec plans"
                      + ("" if p.returncode == 0 else ": " + p.stderr.strip()))
    check(n >= 4, f"{n} YAML snippets and configs checked")

    unknown = []
    for path in doc_files():
        text = open(path).read()
        for m in re.finditer(r"`((" + "|".join(SECTIONS) + r")\.([a-z_]+))[`:= ]", text):
            key, section, name = m.group(1), m.group(2), m.group(3)
            ok = name in params if section == "params" else key in keys
            if not ok:
                unknown.append(f"{os.path.relpath(path, SRC)}:{text.count(chr(10), 0, m.start()) + 1}: `{key}`")
    check(not unknown, "every config key named in the docs exists" + ("" if not unknown else ": " + ", ".join(unknown)))
    shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
