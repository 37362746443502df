"""Continual-learning benchmark on stories260K (issue 7): does RECALL keep old skills better than
parameter averaging, task vectors, TIES, DARE and sequential fine-tuning?

    python bench/continual/run.py --out DIR [--seeds 0,1,2] [--ranks 2] [--jobs 2] [--quick]

One command runs everything and writes DIR/results.{json,csv,md}:

  common/   the base (stories260K converted with `recall convert`) and the general-retention text
            (stories sampled once from the base with `recall generate`, fixed seeds 1000.., the
            same for every benchmark seed)
  seed<S>/  tasks (bench/continual/tasks.py, seed S), experts (`recall finetune` of the base on
            each task), the multi-task model (fine-tuned on the union of the tasks), and
    s1/     scenario 1, multi-model merging: every expert at once with each method and each RECALL
            ablation (`recall merge` under mpirun)
    s2/     scenario 2, sequential continual learning in the task order of --tasks:
            M_t = finetune(P_{t-1}, task t), P_t = merge(P_{t-1}, M_t), P_0 = the base;
            SeqFT is P_t = M_t (no merging)
    evals/  `recall eval` of every model on every task's test set (greedy exact match and
            completion loss) and on the retention text (perplexity)

Every step checks for its finished output first, so a rerun resumes and an identical rerun runs
nothing. Independent steps run --jobs at a time (each single-threaded); a merge takes --ranks of
them. The settings are kept in DIR/bench.json; rerunning with other settings into the same DIR is
refused (use another --out), except that --seeds may grow.

Environment: RECALL_BIN (the recall binary; default <repo>/build/bin/recall), RECALL_SHARED_DIR
(default <repo>/../shared; the model is RECALL_SHARED_DIR/data/stories260K), RECALL_MPIRUN
(default mpirun; run with --oversubscribe), RECALL_BENCH_THREADS (OMP_NUM_THREADS of every child,
default 1). Open MPI's OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) are set for the children (containers).
"""
import argparse
import concurrent.futures as cf
import csv
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import tasks as T  # noqa: E402

RECALL_BIN = os.environ.get("RECALL_BIN", os.path.join(REPO, "build", "bin", "recall"))
SHARED = os.environ.get("RECALL_SHARED_DIR", os.path.join(REPO, "..", "shared"))
MPIRUN = os.environ.get("RECALL_MPIRUN", "mpirun")
THREADS = os.environ.get("RECALL_BENCH_THREADS", "1")

# --- the methods ------------------------------------------------------------------------------
# Scenario 1 (all experts at once). RECALL's reference is the last task's expert and its data that
# task's training text (DESIGN.md 3: M_N, the newest model). Task-vector methods use the base.
S1_BASELINES = [
    ("linear", {"method": "linear"}),
    ("task_arithmetic", {"method": "task_arithmetic", "params.lambda": 1.0}),
    ("task_arithmetic_l0.3", {"method": "task_arithmetic", "params.lambda": 0.3}),
    ("ties", {"method": "ties", "params.density": 0.5}),
    # mergekit's dare_ties defaults (weights 1, no normalization: the sum of the kept task vectors)
    ("dare_ties", {"method": "dare_ties", "params.density": 0.5}),
    # DARE + averaging: the mean of the DARE-sparsified task vectors (weight 1/M each)
    ("dare_linear", {"method": "dare_linear", "params.density": 0.5, "params.weight": "1/M"}),
]
# Data-aware methods (issue 20; docs/ALGORITHM.md 9). Their calibration samples are the merge's
# `data`, the same file RECALL gets: the newest (reference) task's samples.jsonl, since in continual
# learning the old tasks' data is gone at merge time. RegMean and Fisher use no base; AIM (omega 0.4,
# the paper's setting) modifies a task-vector method and takes the base's activations.
S1_DATA_AWARE = [
    ("regmean", {"method": "regmean"}),
    ("regmean_plusplus", {"method": "regmean_plusplus"}),
    ("fisher", {"method": "fisher"}),
    ("task_arithmetic_aim", {"method": "task_arithmetic", "params.lambda": 1.0, "aim.omega": 0.4}),
    ("task_arithmetic_l0.3_aim", {"method": "task_arithmetic", "params.lambda": 0.3, "aim.omega": 0.4}),
    ("ties_aim", {"method": "ties", "params.density": 0.5, "aim.omega": 0.4}),
]
S1_RECALL = [
    ("recall", {}),
    ("recall_K8", {"typical.clusters": 8}),
    ("recall_K128", {"typical.clusters": 128}),
    ("recall_bw0.25", {"kernel.bandwidth_factor": 0.25}),
    ("recall_bw4", {"kernel.bandwidth_factor": 4.0}),
    ("recall_tau0.1", {"recall.temperature": 0.1}),
    ("recall_tau0.25", {"recall.temperature": 0.25}),
    ("recall_tau0.5", {"recall.temperature": 0.5}),
    ("recall_tau2", {"recall.temperature": 2.0}),
    ("recall_global", {"recall.granularity": "global"}),
    ("recall_nb_nearest", {"recall.non_block": "nearest_block"}),
    ("recall_nb_reference", {"recall.non_block": "reference"}),
    ("recall_linear_cka", {"kernel.kind": "linear_cka"}),
    # issue 18: token pooling (the default skips the first token) and the pairwise reading
    ("recall_pool_mean", {"typical.pooling": "mean", "kernel.pooling": "mean"}),
    ("recall_pool_last", {"typical.pooling": "last", "kernel.pooling": "last"}),
    ("recall_pairwise", {"recall.similarity": "pairwise_mean"}),
]
# Scenario 2 (chain): each step merges two models, the previous merged model P_{t-1} and the new
# expert M_t (fine-tuned from P_{t-1}). Task vectors are taken from the original base, so TIES and
# DARE see (P_{t-1} - base) and (M_t - base). Task arithmetic is not run here: with two models it
# is either linear interpolation (lambda 0.5) or double counts P_{t-1} - base (lambda 1).
S2_METHODS = [
    ("linear", {"method": "linear"}),
    ("ties", {"method": "ties", "params.density": 0.5}),
    ("dare_linear", {"method": "dare_linear", "params.density": 0.5, "params.weight": "1/M"}),
    ("recall", {}),
    ("recall_tau0.25", {"recall.temperature": 0.25}),
    ("recall_pool_mean", {"typical.pooling": "mean", "kernel.pooling": "mean"}),
    ("recall_pairwise", {"recall.similarity": "pairwise_mean"}),
    # issue 20: the data-aware methods, calibrated on task t's samples (the same data as RECALL's)
    ("regmean", {"method": "regmean"}),
    ("regmean_plusplus", {"method": "regmean_plusplus"}),
    ("fisher", {"method": "fisher"}),
    ("ties_aim", {"method": "ties", "params.density": 0.5, "aim.omega": 0.4}),
]
TASK_VECTOR = {"task_arithmetic", "ties", "dare_ties", "dare_linear"}
QUICK_S1 = ["linear", "ties", "recall", "recall_tau0.1"]
QUICK_S2 = ["linear", "recall"]

FULL = dict(tasks=",".join(T.TASKS), train=2000, test=50, steps=150, mtl_steps=450, lr=1e-3, batch=16,
            warmup=10, general=32, general_tokens=128, clusters=32)
QUICK = dict(tasks="cipher,reverse,fact", train=300, test=20, steps=40, mtl_steps=80, lr=3e-3, batch=16,
             warmup=5, general=4, general_tokens=48, clusters=8)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_env():
    return dict(os.environ, OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS,
                OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="1")


class StepFailed(RuntimeError):
    pass


def sh(cmd, logpath):
    """Runs cmd, appending its output to logpath; raises with the command and the log's tail."""
    os.makedirs(os.path.dirname(logpath), exist_ok=True)
    with open(logpath, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env())
    if p.returncode != 0:
        tail = open(logpath).read().splitlines()[-15:]
        raise StepFailed(f"exit {p.returncode}: {' '.join(cmd)}\n  log {logpath}:\n    " + "\n    ".join(tail))


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def is_model(d):
    return os.path.exists(os.path.join(d, "config.json")) and os.path.exists(os.path.join(d, "model.safetensors"))


# --- the scheduler ------------------------------------------------------------------------------
class Job:
    def __init__(self, name, fn, done, deps=(), slots=1, prio=1):
        self.name, self.fn, self.done, self.deps, self.slots, self.prio = name, fn, done, list(deps), slots, prio
        self.state = "pending"  # pending | running | ok | skipped | failed | blocked
        self.seconds = 0.0
        self.error = None


class Scheduler:
    """Runs jobs whose dependencies finished, at most `slots` CPU slots at once (a merge under
    mpirun -np R takes R); a job whose output already exists is skipped without running."""

    def __init__(self, slots):
        self.slots = slots
        self.jobs = {}
        self.order = []

    def add(self, name, fn, done, deps=(), slots=1, prio=1):
        assert name not in self.jobs, name
        for d in deps:
            assert d in self.jobs, f"{name} depends on unknown {d}"
        self.jobs[name] = Job(name, fn, done, deps, min(slots, self.slots), prio)
        self.order.append(name)
        return name

    def run(self):
        used = 0
        running = {}
        lock = threading.Lock()

        def timed(job):
            t0 = time.time()
            try:
                job.fn()
            finally:
                job.seconds = time.time() - t0

        with cf.ThreadPoolExecutor(max_workers=self.slots) as pool:
            while True:
                progressed = True
                while progressed:
                    progressed = False
                    for name in sorted(self.order, key=lambda n: (self.jobs[n].prio, self.order.index(n))):
                        j = self.jobs[name]
                        if j.state != "pending":
                            continue
                        states = [self.jobs[d].state for d in j.deps]
                        if any(s in ("failed", "blocked") for s in states):
                            j.state = "blocked"
                            progressed = True
                            continue
                        if not all(s in ("ok", "skipped") for s in states):
                            continue
                        if j.done():
                            j.state = "skipped"
                            progressed = True
                            continue
                        if used + j.slots > self.slots and running:
                            continue
                        j.state = "running"
                        used += j.slots
                        running[pool.submit(timed, j)] = j
                        log(f"start {j.name}")
                        progressed = True
                if not running:
                    break
                finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    j = running.pop(fut)
                    used -= j.slots
                    with lock:
                        try:
                            fut.result()
                            if not j.done():
                                raise StepFailed(f"{j.name} ran but its output is missing")
                            j.state = "ok"
                            log(f"done  {j.name} ({j.seconds:.1f} s)")
                        except Exception as e:  # noqa: BLE001 - recorded and reported
                            j.state = "failed"
                            j.error = str(e)
                            log(f"FAILED {j.name}: {e}")
        return {s: sum(1 for j in self.jobs.values() if j.state == s)
                for s in ("ok", "skipped", "failed", "blocked")}


# --- steps --------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args, cfg):
        self.a = args
        self.cfg = cfg
        self.out = os.path.abspath(args.out)
        self.tasks = cfg["tasks"].split(",")
        self.common = os.path.join(self.out, "common")
        self.base = os.path.join(self.common, "base")
        self.general = os.path.join(self.common, "general.jsonl")
        self.s1_names = [n for n, _ in S1_BASELINES + S1_DATA_AWARE + S1_RECALL]
        self.s2_names = [n for n, _ in S2_METHODS]
        if args.quick:
            self.s1_names = [n for n in self.s1_names if n in QUICK_S1]
            self.s2_names = [n for n in self.s2_names if n in QUICK_S2]
        if args.s1_methods:
            self.s1_names = args.s1_methods.split(",")
        if args.s2_methods:
            self.s2_names = args.s2_methods.split(",")
        spec = dict(S1_BASELINES + S1_DATA_AWARE + S1_RECALL)
        spec2 = dict(S2_METHODS)
        for n in self.s1_names:
            if n not in spec:
                raise SystemExit(f"unknown scenario-1 method {n}; known: {', '.join(spec)}")
        for n in self.s2_names:
            if n not in spec2:
                raise SystemExit(f"unknown scenario-2 method {n}; known: {', '.join(spec2)}")
        self.s1_spec, self.s2_spec = spec, spec2

    def sd(self, seed, *parts):
        return os.path.join(self.out, f"seed{seed}", *parts)

    # common
    def convert(self):
        tmp = self.base + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        data = os.path.join(SHARED, "data", "stories260K")
        sh([RECALL_BIN, "convert", "--from", "llama2c", os.path.join(data, "stories260K.bin"), "--out", tmp,
            "--tokenizer", os.path.join(data, "tok512.model")], os.path.join(self.common, "logs", "convert.log"))
        os.replace(tmp, self.base)

    def make_general(self):
        cmds = T.general_text_commands(RECALL_BIN, self.base, self.cfg["general"], self.cfg["general_tokens"])
        rows = []
        for c in cmds:
            p = subprocess.run(c, capture_output=True, text=True, env=child_env())
            if p.returncode != 0:
                raise StepFailed(f"exit {p.returncode}: {' '.join(c)}\n{p.stdout}{p.stderr}")
            rows.append({"text": T.story_from_generate_output(p.stdout)})
        write_json(os.path.join(self.common, "general.meta.json"), {
            "how": "stories sampled once from the converted base with recall generate",
            "commands": [" ".join(c[1:]) for c in cmds]})
        T.write_jsonl(self.general, rows)

    # per seed
    def make_tasks(self, seed):
        d = self.sd(seed, "tasks")
        T.write_tasks(d, seed, self.cfg["train"], self.cfg["test"], self.tasks)
        union = []
        for t in self.tasks:
            union += [json.loads(l) for l in open(os.path.join(d, t, "train.jsonl"))]
        random.Random(f"union:{seed}").shuffle(union)
        T.write_jsonl(os.path.join(d, "union_train.jsonl"), union)
        rows, index = [], {}
        for t in self.tasks:
            test = [json.loads(l) for l in open(os.path.join(d, t, "test.jsonl"))]
            index[t] = [len(rows), len(rows) + len(test)]
            rows += test
        general = [json.loads(l) for l in open(self.general)]
        index["general"] = [len(rows), len(rows) + len(general)]
        rows += general
        write_json(os.path.join(d, "eval_index.json"), index)
        T.write_jsonl(os.path.join(d, "eval_set.jsonl"), rows)

    def tasks_done(self, seed):
        return os.path.exists(self.sd(seed, "tasks", "eval_set.jsonl"))

    def finetune(self, seed, model, data, out, steps):
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        c = self.cfg
        sh([RECALL_BIN, "finetune", "--model", model, "--data", data, "--out", tmp, "--steps", str(steps),
            "--batch", str(c["batch"]), "--lr", str(c["lr"]), "--warmup", str(c["warmup"]), "--seed", str(seed),
            "--log-every", "50"], out + ".log")
        os.replace(tmp, out)

    def merge(self, seed, cfg_lines, out, overrides):
        """Writes out.yaml and runs recall merge on it; the output is out/ (hf/ inside)."""
        y = out + ".yaml"
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(y, "w") as f:
            f.write("\n".join(cfg_lines) + "\n")
        cmd = [MPIRUN, "-np", str(self.a.ranks), "--oversubscribe", RECALL_BIN, "merge", "--config", y, "--quiet"]
        n_task = sum(1 for l in cfg_lines if l.startswith("  - {name:") and not l.startswith("  - {name: base,"))
        for k, v in overrides.items():
            if v == "1/M":  # one weight per task model, 1/(number of task models)
                v = repr(1.0 / n_task)
            cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
        sh(cmd, out + ".log")

    def merge_cfg(self, seed, models, reference, data, base, out, method_overrides):
        method = method_overrides.get("method", "recall")
        lines = ["models:"]
        if method in TASK_VECTOR:
            lines.append(f"  - {{name: base, path: {base}}}")
        lines += [f"  - {{name: {n}, path: {p}}}" for n, p in models]
        if method in TASK_VECTOR:
            lines.append("base: base")
        lines += [f"reference: {reference}", "method: recall", f"data: {data}", "max_length: 96",
                  f"typical: {{clusters: {self.cfg['clusters']}, seed: 0}}",
                  f"params: {{seed: {seed}}}",
                  f"parallel: {{stages: 1, micro_batch: 16}}",
                  f"output: {{dir: {out}, dtype: float32}}"]
        return lines

    def eval(self, seed, model, key, only=None):
        """recall eval of model on every test set and the retention text (or only task `only`)."""
        full = self.sd(seed, "evals", key + ".full.json")
        os.makedirs(os.path.dirname(full), exist_ok=True)
        data = self.sd(seed, "tasks", "eval_set.jsonl") if only is None else self.sd(seed, "tasks", only, "test.jsonl")
        sh([RECALL_BIN, "eval", "--model", model, "--data", data, "--out", full], self.sd(seed, "evals", key + ".log"))
        samples = json.load(open(full))["samples"]
        if only is None:
            index = json.load(open(self.sd(seed, "tasks", "eval_index.json")))
        else:
            index = {only: [0, len(samples)]}
        summ = {"model": model}
        for name, (b, e) in index.items():
            rows = samples[b:e]
            if name == "general":
                ntok = sum(r["tokens"] for r in rows)
                nll = sum(r["loss"] * r["tokens"] for r in rows)
                summ["general"] = {"loss": nll / ntok, "perplexity": math.exp(nll / ntok), "tokens": ntok}
            else:
                summ[name] = {"acc": sum(bool(r["exact_match"]) for r in rows) / len(rows),
                              "loss": sum(r["loss"] for r in rows) / len(rows), "n": len(rows)}
        write_json(self.sd(seed, "evals", key + ".json"), summ)

    def eval_done(self, seed, key):
        return lambda: os.path.exists(self.sd(seed, "evals", key + ".json"))

    # the plan
    def plan(self, sched, seeds):
        sched.add("convert", self.convert, lambda: is_model(self.base))
        sched.add("general", self.make_general, lambda: os.path.exists(self.general), ["convert"])
        for s in seeds:
            self.plan_seed(sched, s)

    def plan_seed(self, sched, s):
        done_model = lambda d: (lambda: is_model(d))  # noqa: E731
        done_merge = lambda d: (lambda: os.path.exists(os.path.join(d, "manifest.json")))  # noqa: E731
        tasks = self.tasks
        last = tasks[-1]
        P = f"s{s}/"
        tdir = self.sd(s, "tasks")
        models = self.sd(s, "models")
        sched.add(P + "tasks", lambda: self.make_tasks(s), lambda: self.tasks_done(s), ["general"])

        def add_eval(key, model_dir, deps, prio=1, only=None):
            return sched.add(P + "eval/" + key, lambda: self.eval(s, model_dir, key, only), self.eval_done(s, key),
                             deps, prio=prio)

        add_eval("base", self.base, [P + "tasks"])
        experts = {}
        for t in tasks:
            d = os.path.join(models, f"expert_{t}")
            experts[t] = d
            prio = 0 if t == tasks[0] else 1
            sched.add(P + f"ft/expert_{t}",
                      lambda t=t, d=d: self.finetune(s, self.base, os.path.join(tdir, t, "train.jsonl"), d,
                                                     self.cfg["steps"]),
                      done_model(d), [P + "tasks"], prio=prio)
            add_eval(f"expert_{t}", d, [P + f"ft/expert_{t}"])
        mtl = os.path.join(models, "multitask")
        sched.add(P + "ft/multitask",
                  lambda: self.finetune(s, self.base, os.path.join(tdir, "union_train.jsonl"), mtl,
                                        self.cfg["mtl_steps"]), done_model(mtl), [P + "tasks"], prio=2)
        add_eval("multitask", mtl, [P + "ft/multitask"])

        # scenario 1: every expert at once
        for name in self.s1_names:
            ov = dict(self.s1_spec[name])
            out = self.sd(s, "s1", name)
            lines = self.merge_cfg(s, [(t, experts[t]) for t in tasks], last,
                                   os.path.join(tdir, last, "samples.jsonl"), self.base, out, ov)
            sched.add(P + f"s1/{name}", lambda lines=lines, out=out, ov=ov: self.merge(s, lines, out, ov),
                      done_merge(out), [P + f"ft/expert_{t}" for t in tasks] + [P + "tasks"],
                      slots=self.a.ranks)
            add_eval(f"s1_{name}", os.path.join(out, "hf"), [P + f"s1/{name}"])

        # scenario 2: chains. M_1 (fine-tuned from the base) is expert_<task 1> in every chain.
        for chain in ["seqft"] + self.s2_names:
            prev, prev_job = self.base, P + "tasks"
            for i, t in enumerate(tasks):
                step = i + 1
                cdir = self.sd(s, "s2", chain)
                if i == 0:
                    ft_dir, ft_job = experts[t], P + f"ft/expert_{t}"
                else:
                    ft_dir = os.path.join(cdir, f"ft{step}_{t}")
                    ft_job = sched.add(P + f"s2/{chain}/ft{step}",
                                       lambda prev=prev, t=t, ft_dir=ft_dir: self.finetune(
                                           s, prev, os.path.join(tdir, t, "train.jsonl"), ft_dir,
                                           self.cfg["steps"]),
                                       done_model(ft_dir), [prev_job], prio=0)
                    # SeqFT's models are its chain's states (every task); a merging chain's M_t only
                    # gives its plasticity (its own task)
                    add_eval(f"s2_{chain}_ft{step}", ft_dir, [ft_job], only=None if chain == "seqft" else t)
                if chain == "seqft":
                    prev, prev_job = ft_dir, ft_job
                    continue
                ov = dict(self.s2_spec[chain])
                out = os.path.join(cdir, f"merged{step}")
                lines = self.merge_cfg(s, [("prev", prev), ("new", ft_dir)], "new",
                                       os.path.join(tdir, t, "samples.jsonl"), self.base, out, ov)
                mj = sched.add(P + f"s2/{chain}/merge{step}",
                               lambda lines=lines, out=out, ov=ov: self.merge(s, lines, out, ov),
                               done_merge(out), [ft_job, prev_job], slots=self.a.ranks, prio=0)
                add_eval(f"s2_{chain}_merged{step}", os.path.join(out, "hf"), [mj])
                prev, prev_job = os.path.join(out, "hf"), mj


# --- results ------------------------------------------------------------------------------------
def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs, digits=3, pct=False):
    m, sdv = mean_std(xs)
    if m is None:
        return "n/a"
    if pct:
        return f"{100 * m:.1f} ± {100 * sdv:.1f}"
    return f"{m:.{digits}f} ± {sdv:.{digits}f}"


def load_eval(bench, seed, key):
    p = bench.sd(seed, "evals", key + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def summarize_model(ev, tasks):
    if ev is None:
        return None
    accs = [ev[t]["acc"] for t in tasks]
    losses = [ev[t]["loss"] for t in tasks]
    return {"acc": {t: ev[t]["acc"] for t in tasks}, "loss": {t: ev[t]["loss"] for t in tasks},
            "avg_acc": statistics.fmean(accs), "mean_loss": statistics.fmean(losses),
            "general_ppl": ev["general"]["perplexity"]}


def recall_weights(merge_dir):
    p = os.path.join(merge_dir, "report.json")
    if not os.path.exists(p):
        return None
    r = json.load(open(p))
    if r.get("method") != "recall":
        return None
    return {"models": r["models"], "reference": r["reference"],
            "blocks": [{"weights": b["weights"], "similarity": b["similarity"], "sigma2": b["sigma2"]}
                       for b in r["blocks"]],
            "non_block_weights": r.get("non_block_weights")}


def collect(bench, seeds):
    tasks = bench.tasks
    res = {"tasks": tasks, "seeds": seeds, "s1": {}, "s2": {}, "weights": {"s1": {}, "s2": {}}}
    s1_rows = ["base"] + [f"expert_{t}" for t in tasks] + ["multitask"] + [f"s1_{n}" for n in bench.s1_names]
    for key in s1_rows:
        res["s1"][key] = {str(s): summarize_model(load_eval(bench, s, key), tasks) for s in seeds}
    for n in bench.s1_names:
        res["weights"]["s1"][n] = {str(s): recall_weights(bench.sd(s, "s1", n)) for s in seeds}
    for chain in ["seqft"] + bench.s2_names:
        per_seed = {}
        for s in seeds:
            R, ft = [], []
            for i, t in enumerate(tasks):
                step = i + 1
                if chain == "seqft":
                    key = f"expert_{t}" if step == 1 else f"s2_seqft_ft{step}"
                    after = load_eval(bench, s, key)
                    before = after
                else:
                    before = load_eval(bench, s, f"expert_{t}" if step == 1 else f"s2_{chain}_ft{step}")
                    after = load_eval(bench, s, f"s2_{chain}_merged{step}")
                R.append([after[u]["acc"] for u in tasks] if after else None)
                ft.append(before[t]["acc"] if before else None)
            if any(r is None for r in R):
                per_seed[str(s)] = None
                continue
            if chain != "seqft":
                final = load_eval(bench, s, f"s2_{chain}_merged{len(tasks)}")
            else:
                final = load_eval(bench, s, f"s2_seqft_ft{len(tasks)}" if len(tasks) > 1 else f"expert_{tasks[0]}")
            n = len(tasks)
            bwt = statistics.fmean([R[n - 1][j] - R[j][j] for j in range(n - 1)]) if n > 1 else 0.0
            fgt = statistics.fmean([max(R[k][j] for k in range(j, n - 1)) - R[n - 1][j] for j in range(n - 1)]) \
                if n > 1 else 0.0
            per_seed[str(s)] = {"R": R, "ft_acc": ft, "final": summarize_model(final, tasks),
                                "avg_acc": statistics.fmean(R[n - 1]), "bwt": bwt, "forgetting": fgt,
                                "plasticity": statistics.fmean([x for x in ft if x is not None]),
                                "step_avg_acc": [statistics.fmean(R[k][:k + 1]) for k in range(n)]}
        res["s2"][chain] = per_seed
        if chain != "seqft":
            res["weights"]["s2"][chain] = {
                str(s): [recall_weights(bench.sd(s, "s2", chain, f"merged{i + 1}")) for i in range(len(tasks))]
                for s in seeds}
    return res


S1_LABELS = {
    "base": "base (stories260K)", "multitask": "multi-task FT (upper reference)",
    "s1_linear": "linear average", "s1_task_arithmetic": "task arithmetic (λ=1)",
    "s1_task_arithmetic_l0.3": "task arithmetic (λ=0.3)", "s1_ties": "TIES (density 0.5)",
    "s1_dare_ties": "DARE-TIES (density 0.5, mergekit defaults)",
    "s1_dare_linear": "DARE + average (dare_linear, density 0.5, weights 1/M)",
    "s1_recall": "**RECALL (defaults)**",
    "s1_regmean": "RegMean (α=0.9)", "s1_regmean_plusplus": "RegMean++ (α=0.9)", "s1_fisher": "Fisher merging (defaults)",
    "s1_task_arithmetic_aim": "task arithmetic (λ=1) + AIM (ω=0.4)",
    "s1_task_arithmetic_l0.3_aim": "task arithmetic (λ=0.3) + AIM (ω=0.4)",
    "s1_ties_aim": "TIES (density 0.5) + AIM (ω=0.4)",
}


def label(key):
    if key in S1_LABELS:
        return S1_LABELS[key]
    if key.startswith("expert_"):
        return "expert: " + key[len("expert_"):]
    if key.startswith("s1_recall_"):
        return "RECALL " + key[len("s1_recall_"):]
    return key


def weight_stats(w):
    """Per block: the reference's weight, the smallest weight and max |w - 1/M|."""
    M = len(w["models"])
    ref = w["models"].index(w["reference"])
    return [{"ref": b["weights"][ref], "min": min(b["weights"]),
             "dev": max(abs(x - 1.0 / M) for x in b["weights"])} for b in w["blocks"]]


def tables(res, settings, wall=None):
    tasks, seeds = res["tasks"], res["seeds"]
    L = []
    L.append(f"Seeds {', '.join(map(str, seeds))}; mean ± std over seeds; accuracies in % (greedy exact match on "
             f"{settings['test']} test prompts per task); loss = mean completion loss over the tasks; "
             f"ppl = perplexity on the general-retention text (lower is better).\n")
    L.append("### Scenario 1: multi-model merging of all experts\n")
    L.append("| model | " + " | ".join(tasks) + " | avg acc | mean loss | general ppl |")
    L.append("|---" * (len(tasks) + 4) + "|")
    for key, per in res["s1"].items():
        vals = [v for v in per.values() if v]
        if not vals:
            continue
        cells = [fmt([v["acc"][t] for v in vals], pct=True) for t in tasks]
        L.append(f"| {label(key)} | " + " | ".join(cells) + f" | {fmt([v['avg_acc'] for v in vals], pct=True)} | "
                 f"{fmt([v['mean_loss'] for v in vals], 2)} | {fmt([v['general_ppl'] for v in vals], 2)} |")
    L.append("")
    L.append("### Scenario 2: sequential continual learning (" + " → ".join(tasks) + ")\n")
    L.append("ACC = average accuracy over all tasks after the last step; BWT = mean over tasks 1..T-1 of "
             "(accuracy after the last step − accuracy right after that task's step); forgetting = mean of "
             "(best earlier accuracy − final accuracy); plasticity = mean accuracy of the freshly fine-tuned "
             "M_t on its own task t (before merging).\n")
    L.append("| method | " + " | ".join(f"final {t}" for t in tasks) +
             " | ACC | BWT | forgetting | plasticity | mean loss | general ppl |")
    L.append("|---" * (len(tasks) + 7) + "|")
    for chain, per in res["s2"].items():
        vals = [v for v in per.values() if v]
        if not vals:
            continue
        cells = [fmt([v["R"][-1][j] for v in vals], pct=True) for j in range(len(tasks))]
        cells += [fmt([v[k] for v in vals], pct=True) for k in ("avg_acc", "bwt", "forgetting", "plasticity")]
        cells += [fmt([v["final"][k] for v in vals], 2) for k in ("mean_loss", "general_ppl")]
        L.append(f"| {'SeqFT (no merging)' if chain == 'seqft' else chain} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Average accuracy over the tasks seen so far, after each step (seed mean, %):\n")
    L.append("| method | " + " | ".join(f"after {t}" for t in tasks) + " |")
    L.append("|---" * (len(tasks) + 1) + "|")
    for chain, per in res["s2"].items():
        vals = [v for v in per.values() if v]
        if vals:
            L.append(f"| {chain} | " + " | ".join(
                f"{100 * statistics.fmean(v['step_avg_acc'][k] for v in vals):.1f}" for k in range(len(tasks))) + " |")
    L.append("")
    # weights
    L.append("### RECALL's per-block weights\n")
    L.append("Scenario 1 (seed mean; M = " + str(len(tasks)) + " experts, uniform = " +
             f"{1 / len(tasks):.3f}): per block, the reference expert's weight / the smallest weight.\n")
    nblocks = None
    rows = []
    for n, per in res["weights"]["s1"].items():
        ws = [w for w in per.values() if w]
        if not ws:
            continue
        st = [weight_stats(w) for w in ws]
        nblocks = len(st[0])
        cells = [f"{statistics.fmean(x[b]['ref'] for x in st):.3f} / {statistics.fmean(x[b]['min'] for x in st):.3f}"
                 for b in range(nblocks)]
        nb = ws[0].get("non_block_weights")
        nbref = statistics.fmean(w["non_block_weights"][w["models"].index(w["reference"])] for w in ws) if nb else None
        rows.append(f"| {n} | " + " | ".join(cells) + (f" | {nbref:.3f} |" if nbref is not None else " | n/a |"))
    if nblocks:
        L.append("| variant | " + " | ".join(f"block {b}" for b in range(nblocks)) + " | non-block (ref) |")
        L.append("|---" * (nblocks + 2) + "|")
        L += rows
        L.append("")
    rows = []
    for n, per in res["weights"]["s2"].items():
        st = [weight_stats(w) for lst in per.values() for w in (lst or []) if w]
        if not st:
            continue
        nblocks = len(st[0])
        rows.append(f"| {n} | " + " | ".join(f"{statistics.fmean(x[b]['ref'] for x in st):.3f}"
                                            for b in range(nblocks)) + " |")
    if rows:
        L.append("Scenario 2: the new expert's weight per block (mean over steps and seeds; the previous merged "
                 "model gets 1 minus it).\n")
        L.append("| variant | " + " | ".join(f"block {b}" for b in range(nblocks)) + " |")
        L.append("|---" * (nblocks + 1) + "|")
        L += rows
        L.append("")
    return "\n".join(L) + "\n"


def write_results(bench, seeds, settings, run_info):
    res = collect(bench, seeds)
    res["settings"] = settings
    res["run"] = run_info
    write_json(os.path.join(bench.out, "results.json"), res)
    with open(os.path.join(bench.out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        tasks = res["tasks"]
        w.writerow(["scenario", "method", "seed"] + [f"acc_{t}" for t in tasks] +
                   ["avg_acc", "mean_loss", "general_ppl", "bwt", "forgetting", "plasticity"])
        for key, per in res["s1"].items():
            for s, v in per.items():
                if v:
                    w.writerow(["1", key, s] + [f"{v['acc'][t]:.4f}" for t in tasks] +
                               [f"{v['avg_acc']:.4f}", f"{v['mean_loss']:.4f}", f"{v['general_ppl']:.4f}", "", "", ""])
        for chain, per in res["s2"].items():
            for s, v in per.items():
                if v:
                    w.writerow(["2", chain, s] + [f"{x:.4f}" for x in v["R"][-1]] +
                               [f"{v['avg_acc']:.4f}", f"{v['final']['mean_loss']:.4f}",
                                f"{v['final']['general_ppl']:.4f}", f"{v['bwt']:.4f}", f"{v['forgetting']:.4f}",
                                f"{v['plasticity']:.4f}"])
    md = tables(res, settings)
    with open(os.path.join(bench.out, "results.md"), "w") as f:
        f.write("# Continual-learning benchmark results\n\n" + md)
    return res, md


# --- main ---------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, help="output directory (created; reruns resume)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated benchmark seeds (default 0,1,2)")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks per merge (default 2)")
    ap.add_argument("--jobs", type=int, default=2, help="CPU slots: steps run at once (default 2)")
    ap.add_argument("--quick", action="store_true", help="a reduced run: 3 tasks, few steps, 4 methods")
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None,
                        help=f"default {v} ({QUICK[k]} with --quick)")
    ap.add_argument("--s1-methods", help="comma-separated subset of scenario-1 methods")
    ap.add_argument("--s2-methods", help="comma-separated subset of scenario-2 methods")
    ap.add_argument("--report-only", action="store_true", help="only rebuild results.* from finished steps")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    for k in FULL:
        v = getattr(args, k)
        if v is not None:
            cfg[k] = v
    for t in cfg["tasks"].split(","):
        if t not in T.TASKS:
            raise SystemExit(f"unknown task {t}; known: {', '.join(T.TASKS)}")
    if not os.path.exists(RECALL_BIN):
        raise SystemExit(f"recall binary not found: {RECALL_BIN} (set RECALL_BIN)")
    seeds = [int(x) for x in args.seeds.split(",")]
    bench = Bench(args, cfg)
    os.makedirs(bench.out, exist_ok=True)
    settings = dict(cfg, quick=args.quick, s1_methods=bench.s1_names, s2_methods=bench.s2_names)
    sp = os.path.join(bench.out, "bench.json")
    if os.path.exists(sp):
        old = json.load(open(sp))
        old_s = {k: v for k, v in old.items() if k != "seeds"}
        if old_s != settings:
            diff = {k: (old_s.get(k), settings.get(k)) for k in set(old_s) | set(settings)
                    if old_s.get(k) != settings.get(k)}
            raise SystemExit(f"{bench.out} holds a run with other settings {diff}; use another --out")
    known = json.load(open(sp))["seeds"] if os.path.exists(sp) else []
    write_json(sp, dict(settings, seeds=sorted(set(seeds) | set(known))))

    t0 = time.time()
    stats = None
    if not args.report_only:
        sched = Scheduler(max(1, args.jobs))
        bench.plan(sched, seeds)
        log(f"{len(sched.jobs)} steps; recall {RECALL_BIN}; {args.jobs} slot(s), merges on {args.ranks} rank(s)")
        stats = sched.run()
        failed = [j for j in sched.jobs.values() if j.state == "failed"]
        times = {}
        for j in sched.jobs.values():
            if j.state == "ok":
                kind = j.name.split("/")[1] if "/" in j.name else j.name
                times[kind] = times.get(kind, 0.0) + j.seconds
        run_info = {"wall_s": time.time() - t0, "steps": stats, "step_seconds_by_kind": times,
                    "failures": [{"step": j.name, "error": j.error} for j in failed]}
        write_json(os.path.join(bench.out, f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"), run_info)
        write_json(os.path.join(bench.out, "last_run.json"), run_info)
        log(f"steps: {stats['ok']} ran, {stats['skipped']} already done, {stats['failed']} failed, "
            f"{stats['blocked']} blocked; {time.time() - t0:.0f} s")
    else:
        lp = os.path.join(bench.out, "last_run.json")
        run_info = dict(json.load(open(lp)) if os.path.exists(lp) else {}, report_only=True)
    res, md = write_results(bench, seeds, settings, run_info)
    print(md)
    if stats and (stats["failed"] or stats["blocked"]):
        for j in failed:
            print(f"FAILED {j.name}:\n{j.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
