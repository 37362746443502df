"""Static checks of what the Slurm test cannot run:

- shellcheck passes on the batch scripts, their shared setup, the site file template and the
  continual-chain submitter (slurm/);
- slurm/recall.def is a well-formed Apptainer definition (header, known sections, each once), its
  %post/%test/%environment/%runscript are valid POSIX sh (apptainer runs them with /bin/sh) and
  pass shellcheck, it installs every Debian package the build needs (scripts/setup.sh's list less
  the test-only tools), takes torch under scripts/requirements.lock's pins, and copies the checkout
  it builds from. The image itself is not built here (no Apptainer on this machine)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks  # noqa: E402

check = Checks()
SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
SECTIONS = {"setup", "files", "environment", "post", "runscript", "startscript", "test", "labels", "help",
            "arguments", "app"}
TEST_ONLY = {"ccache", "libgtest-dev", "clang", "libclang-rt-14-dev", "librsvg2-bin", "shellcheck"}


def shellcheck(args, what):
    p = subprocess.run(["shellcheck", *args], capture_output=True, text=True, cwd=SRC)
    check(p.returncode == 0, f"shellcheck {what}" + (f":\n{p.stdout}{p.stderr}" if p.returncode else ""))


def main():
    if shutil.which("shellcheck") is None:
        print("FAIL  shellcheck is missing: install Debian's shellcheck (scripts/setup.sh does)")
        sys.exit(1)
    scripts = sorted(f"slurm/{f}" for f in os.listdir(f"{SRC}/slurm")
                     if f.endswith((".sbatch", ".sh")) or f == "site.sh.example")
    shellcheck(["-x", "-s", "bash", *scripts], " ".join(scripts))

    # recall-job.sh's setup, in bash without Slurm: the environment it exports and its errors.
    def job_setup(env, site=None):
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(f"{SRC}/slurm/recall-job.sh", d)
            if site is not None:
                open(f"{d}/site.sh", "w").write(site)
            script = (f'set -euo pipefail; RECALL_SLURM_DIR={d}; source {d}/recall-job.sh; recall_job_init "recall t"; '
                      'echo "SRUN=${SRUN_CPUS_PER_TASK:-} OMP=$OMP_NUM_THREADS EXPORT=$SLURM_EXPORT_ENV BIN=$RECALL_BIN"')
            base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SRUN_", "RECALL_", "MODULE"))}
            return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=dict(base, **env))

    p = job_setup({"SLURM_CPUS_PER_TASK": "8", "RECALL_BIN": "/bin/true"})
    check(p.returncode == 0 and "SRUN=8 OMP=8 EXPORT=ALL BIN=/bin/true" in p.stdout,
          f"recall_job_init exports SRUN_CPUS_PER_TASK and OMP_NUM_THREADS from SLURM_CPUS_PER_TASK, SLURM_EXPORT_ENV=ALL: "
          f"{p.stdout.strip()!r} {p.stderr.strip()!r}")
    p = job_setup({}, site="RECALL_BIN=/bin/true\n")
    check(p.returncode == 0 and "site setup: sourcing" in p.stdout and "BIN=/bin/true" in p.stdout and "SRUN= " in p.stdout,
          f"site.sh beside the scripts is sourced; no SRUN_CPUS_PER_TASK without --cpus-per-task: {p.stdout.strip()!r}")
    for env, site, why in (({"RECALL_BIN": "/bin/true", "RECALL_SITE_ENV": "/nonexistent/site.sh"}, None,
                            "RECALL_SITE_ENV is '/nonexistent/site.sh', which does not exist"),
                           ({"RECALL_BIN": "/bin/true", "RECALL_MODULES": "gcc/12"}, None,
                            "RECALL_MODULES is 'gcc/12' but this node has no 'module' command"),
                           ({"RECALL_BIN": "/bin/true"}, "module() { return 3; }\nRECALL_MODULES=nope\n",
                            "module load nope failed (exit status 3)"),
                           ({"RECALL_BIN": "/nonexistent/recall"}, None,
                            "the recall binary is not at /nonexistent/recall; set RECALL_BIN (in slurm/site.sh")):
        p = job_setup(env, site)
        check(p.returncode == 2 and f"recall t: error: {why}" in p.stderr, f"recall_job_init fails clearly: {p.stderr.strip()!r}")

    text = open(f"{SRC}/slurm/recall.def").read()
    lines = text.splitlines()
    header = [l for l in lines[:5] if l.strip() and not l.startswith("#")]
    check(header[:2] == ["Bootstrap: docker", "From: debian:bookworm"], f"recall.def header: {header[:2]}")
    names = re.findall(r"^%(\w+)", text, re.M)
    check(set(names) <= SECTIONS and len(names) == len(set(names)) and {"post", "files", "runscript"} <= set(names),
          f"recall.def sections are known and each appears once: {names}")
    bodies = {}
    for m in re.finditer(r"^%(\w+)[^\n]*\n(.*?)(?=^%\w+|\Z)", text, re.M | re.S):
        bodies[m.group(1)] = m.group(2)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("post", "test", "environment", "runscript"):
            path = f"{tmp}/{name}.sh"
            open(path, "w").write("#!/bin/sh\n" + bodies.get(name, ""))
            p = subprocess.run(["sh", "-n", path], capture_output=True, text=True)
            check(p.returncode == 0, f"recall.def %{name} is valid sh {p.stderr.strip()}")
            shellcheck(["-s", "sh", path], f"recall.def %{name}")
    post = bodies.get("post", "")
    installed = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", " ".join(
        re.findall(r"apt-get install(?:[^\n\\]|\\\n)*", post))))
    setup = open(f"{SRC}/scripts/setup.sh").read()
    listed = re.search(r"apt_packages=\((.*?)\)", setup, re.S).group(1)
    wanted = {w for l in listed.splitlines() for w in l.split("#")[0].split()} - TEST_ONLY
    check(wanted and wanted <= installed, f"recall.def installs the {len(wanted)} build packages of setup.sh"
          + (f"; missing {sorted(wanted - installed)}" if not wanted <= installed else ""))
    check("-c /opt/recall/src/scripts/requirements.lock torch" in post and
          re.search(r"^torch==", open(f"{SRC}/scripts/requirements.lock").read(), re.M) is not None,
          "recall.def installs torch under the pins of scripts/requirements.lock")
    check(re.search(r"^\s*\.\s+/opt/recall/src\s*$", bodies.get("files", ""), re.M) is not None
          and "-S /opt/recall/src" in post, "recall.def copies the checkout to /opt/recall/src and builds it")
    check.finish()


if __name__ == "__main__":
    main()
