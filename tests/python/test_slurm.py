"""A real one-node Slurm: installs Debian's slurm-wlm and munge when missing, starts a private
munged, slurmctld and slurmd on localhost (state, sockets and ports of its own), and submits:

  1. slurm/merge.sbatch on a tiny RECALL merge; the output is verified and its merged weights are
     compared byte for byte with the same merge run locally with mpirun; the merge is then
     resubmitted, from a copy of slurm/ with a site.sh (RECALL_BIN, RECALL_MODULES and a stand-in
     `module`), by a relative path and with --export=NONE, and must find the site setup and
     finish without merging again (resubmission-safe); a merge killed mid-way (fault injection)
     and resubmitted resumes, and the script's words about the .partial agree with the job's
     (the same number of merged tensors); a bad config fails as the config's error;
  2. a 4-point sweep (`recall sweep plan` -> sbatch --array=0-3 slurm/sweep.sbatch) with an
     evaluation set; each point's merge runs under srun (--mpi=pmix, as merge.sbatch) on the
     task's 2 ranks; every point must be finished and results.csv/.md/.svg must list all four,
     with the metric equal to minus the eval loss and the table best first; the spec keeps only
     the best point's weights (keep_weights: best, decided by tasks finishing in any order);
  3. slurm/continual.sh with a finetune -> merge chain (--dependency=afterok): the merge must
     start after the finetune ended and consume its output.

Every daemon it started is stopped by pid at the end, also on failure. When the machine cannot
run Slurm (no root to install it, daemons that do not come up), the test FAILS saying why."""
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, run, tiny_llama, write_jsonl  # noqa: E402

SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
SLURM_DIR = os.path.abspath(os.path.join(SRC, "slurm"))
BIN = os.path.abspath(BIN)
WAIT_S = 480  # the jobs take about a minute here; Slurm itself answers in seconds

failures = []


def expect(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def die(msg):
    print("FAIL " + msg, flush=True)
    raise SystemExit(1)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ensure_installed():
    need = ["munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"]
    missing = [p for p in need if shutil.which(p) is None and not os.path.exists("/usr/sbin/" + p)]
    if not missing:
        return
    print(f"installing slurm-wlm, munge (missing: {missing})", flush=True)
    if os.geteuid() != 0:
        die(f"Slurm is not installed ({missing} missing) and this test is not root, so it cannot apt-get install "
            "slurm-wlm slurm-wlm-basic-plugins munge; install them (or run as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm",
                        "slurm-wlm-basic-plugins", "munge"], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm",
                            "slurm-wlm-basic-plugins", "munge"], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        die("apt-get install slurm-wlm slurm-wlm-basic-plugins munge failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])


def sbin(name):
    return shutil.which(name) or "/usr/sbin/" + name


class Cluster:
    """munged + slurmctld + slurmd in the foreground (so their pids are ours), private state."""

    def __init__(self, root):
        self.root = root
        self.procs = []
        self.host = socket.gethostname()
        self.munge_dir = os.path.join(root, "munge")
        self.sock = os.path.join(self.munge_dir, "munge.sock")
        self.conf = os.path.join(root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf, RECALL_BIN=BIN,
                        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

    def start_daemon(self, argv, log):
        f = open(os.path.join(self.root, log), "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append((argv[0], p))
        return p

    def log(self, name):
        path = os.path.join(self.root, name)
        return open(path).read()[-3000:] if os.path.exists(path) else "(no log)"

    def start(self):
        os.makedirs(self.munge_dir, mode=0o700)
        key = os.path.join(self.munge_dir, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self.start_daemon([sbin("munged"), "--foreground", "--force", f"--socket={self.sock}", f"--key-file={key}",
                           f"--pid-file={self.munge_dir}/munged.pid", f"--log-file={self.munge_dir}/munged.log",
                           f"--seed-file={self.munge_dir}/munged.seed"], "munged.out")
        for _ in range(50):
            if os.path.exists(self.sock):
                break
            time.sleep(0.1)
        cred = subprocess.run(["munge", "-n", "-S", self.sock], capture_output=True)
        un = subprocess.run(["unmunge", "-S", self.sock], input=cred.stdout, capture_output=True)
        if un.returncode != 0:
            die("munged did not come up (munge -n | unmunge failed): " + (cred.stderr + un.stdout + un.stderr).decode() +
                self.log("munged.out") + self.log("munge/munged.log"))
        print("munge: credential round trip ok", flush=True)

        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        cpus = os.cpu_count() or 1
        for d in ("ctld", "d"):
            os.makedirs(os.path.join(self.root, d))
        open(self.conf, "w").write(f"""ClusterName=recalltest
SlurmctldHost={self.host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.sock}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmdSpoolDir={self.root}/d
StateSaveLocation={self.root}/ctld
SlurmUser={user}
SlurmctldLogFile={self.root}/ctld.log
SlurmdLogFile={self.root}/d.log
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName={self.host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        self.start_daemon([sbin("slurmctld"), "-D", "-i", "-f", self.conf], "slurmctld.out")
        time.sleep(1)
        self.start_daemon([sbin("slurmd"), "-D", "-f", self.conf], "slurmd.out")
        state = ""
        for _ in range(60):
            p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
            state = (p.stdout + p.stderr).strip()
            if p.returncode == 0 and state.startswith("idle"):
                break
            for name, proc in self.procs:
                if proc.poll() is not None:
                    die(f"{name} exited ({proc.returncode}) while starting:\n" + self.log("slurmctld.out") +
                        self.log("ctld.log") + self.log("slurmd.out") + self.log("d.log"))
            time.sleep(1)
        else:
            die(f"the node never became idle (sinfo: {state!r}):\n" + self.log("ctld.log") + self.log("d.log"))
        print(f"slurm: one node {self.host} with {cpus} CPUs idle; conf {self.conf}", flush=True)

    def cmd(self, argv, check=True, cwd=None):
        p = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=cwd)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p

    def sbatch(self, args, cwd, env=None):
        p = subprocess.run(["sbatch", "--parsable"] + args, capture_output=True, text=True, cwd=cwd,
                           env=dict(self.env, **(env or {})))
        if p.returncode != 0:
            raise AssertionError(f"sbatch {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p.stdout.strip().split(";")[0]

    def job(self, jobid):
        """scontrol's fields of a job (or of every task of an array) as dicts."""
        p = self.cmd(["scontrol", "-o", "show", "job", str(jobid)], check=False)
        jobs = []
        for line in p.stdout.splitlines():
            jobs.append(dict(m.groups() for m in re.finditer(r"(\w+(?:/\w+)?)=(\S*)", line)))
        return jobs

    def wait(self, jobids, limit_s):
        t0 = time.time()
        while time.time() - t0 < limit_s:
            q = self.cmd(["squeue", "-h", "-o", "%i %T %r"], check=False).stdout.split("\n")
            live = [l for l in q if l.strip() and any(l.split()[0].split("_")[0] == j for j in jobids)]
            if not live:
                return time.time() - t0
            time.sleep(2)
        q = self.cmd(["squeue"], check=False).stdout
        raise AssertionError(f"jobs {jobids} still queued/running after {limit_s} s:\n{q}\n" + self.log("ctld.log"))

    def stop(self):
        subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True, env=self.env)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            print(f"stopped {os.path.basename(name)} (pid {p.pid}, exit {p.returncode})", flush=True)


def check_completed(cluster, jobid, what):
    jobs = cluster.job(jobid)
    states = [(j.get("JobId"), j.get("ArrayTaskId", ""), j.get("JobState"), j.get("ExitCode")) for j in jobs]
    ok = bool(jobs) and all(j.get("JobState") == "COMPLETED" and j.get("ExitCode") == "0:0" for j in jobs)
    expect(ok, f"{what}: Slurm says COMPLETED 0:0 ({states})")
    return jobs


def main():
    ensure_installed()
    tmp = tempfile.mkdtemp(prefix="recall-slurm-")
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    cluster = Cluster(os.path.join(tmp, "slurm"))
    os.makedirs(cluster.root)
    try:
        cluster.start()

        # --- fixtures: three tiny Llamas sharing a base, typical-sample data, an eval set -----
        t0 = time.time()
        small = dict(layers=2, hidden=32, inter=48, heads=2, kv_heads=1)
        base = tiny_llama(f"{work}/base", seed=0, **small)
        tiny_llama(f"{work}/a", seed=1, base_state=base, noise=0.02, **small)
        tiny_llama(f"{work}/b", seed=2, base_state=base, noise=0.03, **small)
        import numpy as np
        rng = np.random.default_rng(0)
        write_jsonl(f"{work}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=10).tolist()} for _ in range(12)])
        write_jsonl(f"{work}/eval.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(6)])
        open(f"{work}/merge.yaml", "w").write(f"""models:
  - {{name: base, path: {work}/base}}
  - {{name: a, path: {work}/a}}
  - {{name: b, path: {work}/b}}
reference: b
method: recall
data: {work}/data.jsonl
typical: {{clusters: 4, seed: 1}}
parallel: {{stages: 1, micro_batch: 4}}
output: {{dir: {work}/merged}}
""")
        open(f"{work}/sweep.yaml", "w").write(f"""base_config: merge.yaml
grid:
  recall.temperature: [0.5, 2.0]
  typical.clusters: [2, 4]
eval:
  data: [{{name: heldout, path: {work}/eval.jsonl}}]
keep_weights: best
""")
        open(f"{work}/resume.yaml", "w").write(f"""models:
  - {{name: base, path: {work}/base}}
  - {{name: a, path: {work}/a}}
method: linear
output: {{dir: {work}/resumed, checkpoint_bytes: 0}}
""")
        open(f"{work}/bad.yaml", "w").write(f"models:\n  - {{name: base, path: {work}/base}}\nmethod: linear\n")
        # A copy of slurm/ with a site file, as a cluster would keep one beside the scripts.
        site_dir = f"{tmp}/site-slurm"
        shutil.copytree(SLURM_DIR, site_dir)
        open(f"{site_dir}/site.sh", "w").write(f"""RECALL_BIN={BIN}
RECALL_MODULES="fake/1.0 other/2"
module() {{ echo "module $*" >> {work}/module-calls.txt; }}
""")
        open(f"{work}/chain-merge.yaml", "w").write(f"""models:
  - {{name: base, path: {work}/base}}
  - {{name: ft, path: {work}/ft}}
method: linear
output: {{dir: {work}/chain-merged}}
""")
        open(f"{work}/chain.plan", "w").write(f"""# finetune a, then merge the result with the base
ft     finetune -- --model {work}/a --data {work}/data.jsonl --out {work}/ft --steps 2 --batch 4 --lr 1e-3 --warmup 0
merge  merge    -- {work}/chain-merge.yaml
""")
        p = run(["sweep", "plan", f"{work}/sweep.yaml", "--out", f"{work}/sweep"])
        m = re.search(r"^array: (\d+-\d+)$", p.stdout, re.M)
        expect(m is not None and m.group(1) == "0-3", f"sweep plan prints the array range 0-3: {p.stdout.strip()!r}")
        print(f"fixtures ready in {time.time() - t0:.1f} s", flush=True)

        # --- continual.sh checks a plan before submitting anything (dry runs) --------------------
        open(f"{work}/dry.plan", "w").write(f"""ft1  finetune --gpus-per-task=1 -- --model {work}/a --data "{work}/data.jsonl" --out {work}/x
ft2  finetune after=none -- --model {work}/b --data {work}/data.jsonl --out {work}/y
m    merge after=ft1,ft2 --nodes=1 --ntasks-per-node=2 -- {work}/chain-merge.yaml --set output.dir={work}/z
sw   sweep --array=0-3 -- {work}/sweep
""")
        p = cluster.cmd([f"{SLURM_DIR}/continual.sh", f"{work}/dry.plan", "--dry-run"], cwd=work)
        lines = [l for l in p.stdout.splitlines() if l.startswith("sbatch")]
        expect(len(lines) == 4 and "--dependency" not in lines[0] and "--dependency" not in lines[1]
               and "--dependency=afterok:dry0:dry1 --kill-on-invalid-dep=yes --nodes=1 --ntasks-per-node=2 "
                   f"{SLURM_DIR}/merge.sbatch" in lines[2]
               and f"--dependency=afterok:dry2 --kill-on-invalid-dep=yes --array=0-3 {SLURM_DIR}/sweep.sbatch" in lines[3],
               "continual.sh --dry-run: dependencies (default: previous step; after=...; after=none) and sbatch options")
        for bad, why in ((f"a merge after=zz -- {work}/merge.yaml", "is after 'zz', which is not an earlier step"),
                         ("a merge -- /nonexistent.yaml", "merge config '/nonexistent.yaml' does not exist"),
                         (f"a mrege -- {work}/merge.yaml", "unknown kind 'mrege'")):
            open(f"{work}/bad.plan", "w").write(f"ok finetune -- --model a --out b\n{bad}\n")
            p = cluster.cmd([f"{SLURM_DIR}/continual.sh", f"{work}/bad.plan"], check=False, cwd=work)
            expect(p.returncode == 2 and f"bad.plan:2: " in p.stderr and why in p.stderr and "job" not in p.stdout,
                   f"continual.sh rejects a bad plan before submitting: {p.stderr.strip()!r}")

        # --- submit: the merge, the sweep array, the chain --------------------------------------
        merge_id = cluster.sbatch([f"{SLURM_DIR}/merge.sbatch", f"{work}/merge.yaml"], cwd=work)
        killed_id = cluster.sbatch([f"{SLURM_DIR}/merge.sbatch", f"{work}/resume.yaml"], cwd=work,
                                   env={"RECALL_FAULT_INJECT": "merge:0:12"})
        bad_id = cluster.sbatch([f"{SLURM_DIR}/merge.sbatch", f"{work}/bad.yaml"], cwd=work)
        sweep_id = cluster.sbatch(["--array=0-3", f"{SLURM_DIR}/sweep.sbatch", f"{work}/sweep"], cwd=work)
        chain = cluster.cmd([f"{SLURM_DIR}/continual.sh", f"{work}/chain.plan"], cwd=work).stdout
        chain_ids = re.findall(r"^step (\w+) \((\w+)\): job (\d+)", chain, re.M)
        expect([c[:2] for c in chain_ids] == [("ft", "finetune"), ("merge", "merge")], f"continual.sh submitted 2 steps: {chain.strip()!r}")
        ids = [merge_id, killed_id, bad_id, sweep_id] + [c[2] for c in chain_ids]
        print(f"submitted jobs {ids}", flush=True)
        waited = cluster.wait(ids, WAIT_S)
        print(f"all jobs left the queue after {waited:.1f} s", flush=True)

        # --- 1. merge.sbatch -------------------------------------------------------------------
        check_completed(cluster, merge_id, "merge.sbatch")
        log = open(f"{work}/slurm-{merge_id}.out").read()
        expect("recall merge: job" in log and "finished" in log, "slurm-<id>.out has the job's start and end lines")
        launcher = re.search(r"launching with (.*)", log)
        expect(re.search(r"^ranks: 2 \(", log, re.M) is not None,
               f"the 2 Slurm tasks formed one 2-rank MPI job (launcher: {launcher.group(1) if launcher else '?'})")
        out = f"{work}/merged"
        expect(os.path.exists(f"{out}/manifest.json") and not os.path.exists(f"{out}.partial"),
               "merge output committed (manifest.json, no .partial)")
        expect(run(["verify", out], check=False).returncode == 0, "recall verify accepts the Slurm merge")
        run(["merge", "--config", f"{work}/merge.yaml", "--set", f"output.dir={work}/merged-local"], np=1)
        a, b = sha(f"{out}/hf/model.safetensors"), sha(f"{work}/merged-local/hf/model.safetensors")
        expect(a == b, f"Slurm merge (2 tasks) equals a local 1-rank merge byte for byte ({a[:12]} vs {b[:12]})")
        # Resubmitted from a copy of slurm/ with a site.sh, by a relative path, with --export=NONE:
        # the script finds its directory and the site setup without the submitting environment.
        mtime = os.path.getmtime(f"{out}/manifest.json")
        again = cluster.sbatch(["--export=NONE", os.path.relpath(f"{site_dir}/merge.sbatch", tmp), f"{work}/merge.yaml"],
                               cwd=tmp)
        resumed = cluster.sbatch([f"{SLURM_DIR}/merge.sbatch", f"{work}/resume.yaml"], cwd=work)
        cluster.wait([again, resumed], 180)
        check_completed(cluster, again, "resubmitted merge.sbatch (copy with site.sh, --export=NONE)")
        log2 = open(f"{tmp}/slurm-{again}.out").read()
        expect("already complete" in log2 and os.path.getmtime(f"{out}/manifest.json") == mtime,
               "resubmitting a finished merge verifies it instead of merging again")
        calls = open(f"{work}/module-calls.txt").read() if os.path.exists(f"{work}/module-calls.txt") else ""
        expect(f"site setup: sourcing {site_dir}/site.sh" in log2 and "module load fake/1.0 other/2" in log2
               and calls.strip() == "module load fake/1.0 other/2",
               f"under --export=NONE the job sourced slurm/site.sh and ran `module load $RECALL_MODULES` ({calls.strip()!r})")

        # A merge killed mid-way, resubmitted: the script and the job say the same about the .partial.
        killed = cluster.job(killed_id)
        expect(bool(killed) and killed[0].get("JobState") == "FAILED",
               f"the merge killed by fault injection failed ({killed[0].get('JobState') if killed else '?'})")
        check_completed(cluster, resumed, "resubmitted interrupted merge")
        log3 = open(f"{work}/slurm-{resumed}.out").read()
        said = re.search(r"found the unfinished \S+\.partial of an earlier attempt \((\d+) tensor\(s\) recorded", log3)
        did = re.search(r"resuming: (\d+) of \d+ tensors already merged", log3)
        expect(said is not None and did is not None and said.group(1) == did.group(1) and int(did.group(1)) > 0
               and "removing" not in log3 and "starting again" not in log3,
               f"resume: the script's count of merged tensors ({said.group(1) if said else '?'}) is what the job reuses "
               f"({did.group(1) if did else '?'})")
        expect(run(["verify", f"{work}/resumed"], check=False).returncode == 0, "the resumed merge verifies")

        # A bad config is reported as the config's error.
        bad = cluster.job(bad_id)
        log4 = open(f"{work}/slurm-{bad_id}.out").read()
        expect(bool(bad) and bad[0].get("JobState") == "FAILED" and
               f"recall merge: error: the merge config {work}/bad.yaml is not valid: {work}/bad.yaml" in log4
               and "needs at least 2 models, got 1" in log4 and "recall sweep" not in log4,
               f"a bad config fails as such: {log4.strip().splitlines()[-1] if log4.strip() else ''!r}")

        # --- 2. the sweep array ----------------------------------------------------------------
        check_completed(cluster, sweep_id, "sweep.sbatch array 0-3")
        logs = [f"{work}/slurm-{sweep_id}_{i}.out" for i in range(4)]
        expect(all(os.path.exists(l) for l in logs), "one slurm-<job>_<task>.out per array task")
        want_launcher = launcher.group(1).split(" (")[0] if launcher else "?"
        task_logs = "".join(open(l).read() for l in logs if os.path.exists(l))
        merge_logs = [open(f"{work}/sweep/points/{i:04d}/merge.log").read() for i in range(4)
                      if os.path.exists(f"{work}/sweep/points/{i:04d}/merge.log")]
        expect(task_logs.count(f"recall sweep: launching with {want_launcher}") == 4 and len(merge_logs) == 4 and
               all(f"$ {want_launcher} -n 2 " in m and re.search(r"^ranks: 2 \(", m, re.M) for m in merge_logs),
               f"every sweep point merged with {want_launcher} -n 2 inside its task, as merge.sbatch launches")
        for i in range(4):
            expect(os.path.exists(f"{work}/sweep/points/{i:04d}/out/manifest.json") and
                   os.path.exists(f"{work}/sweep/points/{i:04d}/eval/heldout.json"), f"point {i} merged and evaluated")
        run(["sweep", "report", f"{work}/sweep"])
        rows = list(csv.DictReader(open(f"{work}/sweep/results.csv")))
        expect(len(rows) == 4 and all(r["status"] == "finished" for r in rows), f"results.csv: 4 finished points")
        worst = 0.0
        for r in rows:
            ev = json.load(open(f"{work}/sweep/points/{r['point']}/eval/heldout.json"))
            worst = max(worst, abs(float(r["metric"]) + ev["summary"]["text"]["loss"]))
        expect(worst < 1e-9, f"metric = -eval loss for every point (max abs diff {worst:.3g})")
        metrics = [float(r["metric"]) for r in rows]
        expect(metrics == sorted(metrics, reverse=True), f"results.csv best first: {metrics}")
        grid = sorted((r["recall.temperature"], r["typical.clusters"]) for r in rows)
        expect(grid == [("0.5", "2"), ("0.5", "4"), ("2", "2"), ("2", "4")], f"the 4 grid points: {grid}")
        md = open(f"{work}/sweep/results.md").read()
        expect(md.count("\n| ") == 5 and "Failed points" not in md, "results.md: header + 4 rows, no failures")
        svg = open(f"{work}/sweep/results.svg").read()
        expect(svg.count("<circle") == 8 and "recall.temperature" in svg and "typical.clusters" in svg,
               "results.svg plots 4 points against each of the 2 swept keys")
        # keep_weights: best, decided by array tasks that finish in any order, some at once.
        having = [f"{i:04d}" for i in range(4) if os.path.exists(f"{work}/sweep/points/{i:04d}/out/merged.h5")
                  or os.path.exists(f"{work}/sweep/points/{i:04d}/out/hf/model.safetensors")]
        expect(having == [rows[0]["point"]] and [r["weights"] for r in rows] == ["kept"] + ["dropped"] * 3,
               f"keep_weights: best: only the best point, {rows[0]['point']}, keeps its weights (found {having})")
        expect(json.load(open(f"{work}/sweep/best.json"))["point"] == int(rows[0]["point"]) and
               run(["verify", f"{work}/sweep/points/{rows[0]['point']}/out"], check=False).returncode == 0,
               "best.json names the best point, and its weights verify")
        expect(len(re.findall(r"freed \d+ bytes", task_logs)) >= 3,
               "the task logs say how many bytes each dropped point freed")
        # Resubmitting the array: every point is skipped as finished.
        again = cluster.sbatch(["--array=0-3", f"{SLURM_DIR}/sweep.sbatch", f"{work}/sweep"], cwd=work)
        cluster.wait([again], 180)
        check_completed(cluster, again, "resubmitted sweep array")
        relog = "".join(open(f"{work}/slurm-{again}_{i}.out").read() for i in range(4))
        skipped = re.findall(r"^point (\d+) .*: already finished$", relog, re.M)
        expect(sorted(skipped) == ["0000", "0001", "0002", "0003"], f"the resubmitted array skips all 4 finished points: {skipped}")

        # --- 3. the continual chain ------------------------------------------------------------
        if len(chain_ids) == 2:
            ft, mg = check_completed(cluster, chain_ids[0][2], "chain step ft"), \
                check_completed(cluster, chain_ids[1][2], "chain step merge")
            if ft and mg:
                expect(mg[0].get("StartTime", "") >= ft[0].get("EndTime", "~"),
                       f"merge started ({mg[0].get('StartTime')}) after finetune ended ({ft[0].get('EndTime')})")
            expect(os.path.exists(f"{work}/ft/config.json") and not os.path.exists(f"{work}/ft.partial"),
                   "finetune wrote its model and renamed .partial")
            expect(run(["verify", f"{work}/chain-merged"], check=False).returncode == 0, "the chain's merge verifies")
            man = json.load(open(f"{work}/chain-merged/manifest.json"))
            expect(f"{work}/ft" in [i["path"] for i in man["inputs"]], "the chain's merge consumed the finetuned model")
    finally:
        cluster.stop()
    if failures:
        print(f"{len(failures)} check(s) failed; Slurm logs in {cluster.root}")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all Slurm checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
