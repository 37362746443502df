"""The house rules that a script can check (issue 21): no include cycle between folders, no
function over 120 lines in src/ and jobs/, and no MPI call outside the dist layer (issue 15: one
distributed runtime; scripts/check_structure.py), and docs/CONFIG.md equal to what `recall help
config` generates from the config's field table and the method registry.
The checker is itself checked: a cycle, a long function and MPI calls planted in a copy of the tree
must be found (and an MPI_Comm passed on, a comment and a call inside src/dist must not)."""
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
    check(p.returncode == 0, "the tree has no include cycle between folders, no function over 120 lines and "
                             "no MPI call outside the dist layer")

    with tempfile.TemporaryDirectory() as tmp:
        for d in ("include", "src", "jobs"):
            shutil.copytree(os.path.join(SRC, d), os.path.join(tmp, d))
        # A cycle: util (the lowest folder) includes a pipeline header.
        with open(os.path.join(tmp, "src/util/format.cpp"), "a") as f:
            f.write('\n#include "recall/pipeline/plan.h"\n')
        # A long function in jobs/.
        with open(os.path.join(tmp, "jobs/long.cpp"), "w") as f:
            f.write("int long_one(int x) {\n" + "  x += 1;\n" * 130 + "  return x;\n}\n")
        # MPI calls outside the dist layer: a collective in a pipeline file, MPI_Init in a job, a
        # send in a header; not: a communicator passed to HDF5, a comment, a call inside src/dist.
        with open(os.path.join(tmp, "src/pipeline/planted.cpp"), "w") as f:
            f.write("#include <mpi.h>\nvoid f(MPI_Comm comm, int* x) {\n  // MPI_Barrier(comm) in a comment\n"
                    "  H5Pset_fapl_mpio(0, comm, MPI_INFO_NULL);\n  MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_INT, "
                    "MPI_MAX, comm);\n}\n")
        with open(os.path.join(tmp, "jobs/planted.cpp"), "a") as f:
            f.write("int g(int argc, char** argv) { return MPI_Init (&argc, &argv); }\n")
        with open(os.path.join(tmp, "include/recall/util/planted.h"), "w") as f:
            f.write("inline int h(MPI_Comm c, int* x) { return MPI_Isend(x, 1, MPI_INT, 0, 0, c, nullptr); }\n")
        with open(os.path.join(tmp, "src/dist/planted.cpp"), "w") as f:
            f.write("void k(MPI_Comm c) { MPI_Barrier(c); }\n")
        q = check_tree(tmp)
        check("src/pipeline/planted.cpp:5: MPI_Allreduce outside the dist layer" in q.stdout and
              "jobs/planted.cpp:1: MPI_Init outside the dist layer" in q.stdout and
              "include/recall/util/planted.h:1: MPI_Isend outside the dist layer" in q.stdout,
              f"planted MPI calls outside the dist layer are found with file and line: {q.stdout[-600:]}")
        check("planted.cpp:3" not in q.stdout and "planted.cpp:4" not in q.stdout and
              "src/dist/planted.cpp" not in q.stdout,
              "a comment, a communicator passed to HDF5 and a call inside src/dist are not findings")
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
