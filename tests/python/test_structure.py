"""The house rules that a script can check (issue 21): no include cycle between folders and no
function over 120 lines in src/ and jobs/ (scripts/check_structure.py), and docs/CONFIG.md equal to
what `recall help config` generates from the config's field table and the method registry.
The checker is itself checked: a cycle and a long function planted in a copy of the tree must be
found."""
import os
import shutil
import subprocess
import sys
import tempfile

from recall_testlib import BIN, Checks, run

SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
CHECKER = os.path.join(SRC, "scripts", "check_structure.py")


def check_tree(root):
    return subprocess.run([sys.executable, CHECKER, "--root", root], capture_output=True, text=True)


def main():
    check = Checks()
    p = check_tree(SRC)
    print(p.stdout.strip())
    check(p.returncode == 0, "the tree has no include cycle between folders and no function over 120 lines")

    with tempfile.TemporaryDirectory() as tmp:
        for d in ("include", "src", "jobs"):
            shutil.copytree(os.path.join(SRC, d), os.path.join(tmp, d))
        # A cycle: util (the lowest folder) includes a pipeline header.
        with open(os.path.join(tmp, "src/util/format.cpp"), "a") as f:
            f.write('\n#include "recall/pipeline/plan.h"\n')
        # A long function in jobs/.
        with open(os.path.join(tmp, "jobs/long.cpp"), "w") as f:
            f.write("int long_one(int x) {\n" + "  x += 1;\n" * 130 + "  return x;\n}\n")
        q = check_tree(tmp)
        check(q.returncode == 1 and "include cycle between folders" in q.stdout and "util" in q.stdout,
              "a planted cycle (util -> pipeline) is found and named")
        check("jobs/long.cpp:1: function of 133 lines" in q.stdout, "a planted 133-line function is found")

    generated = run(["help", "config"]).stdout
    with open(os.path.join(SRC, "docs", "CONFIG.md")) as f:
        committed = f.read()
    check(generated == committed,
          "docs/CONFIG.md equals `recall help config` (regenerate: build/bin/recall help config > docs/CONFIG.md)")
    check.finish()


if __name__ == "__main__":
    main()
