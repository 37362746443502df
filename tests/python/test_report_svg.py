"""report.svg is well-formed, renders with rsvg-convert (Debian librsvg2-bin), and shows what the
merge did:

- RECALL (a real 3-model merge of tiny Llamas): block ticks on the x axis of both panels; a colour
  scale with values whose bands get lighter as the value rises (relative luminance strictly
  monotone, so it reads in grey); every heatmap cell's colour follows its weight (the weights
  equal report.json's); one similarity curve per model, each with its own colour and dash pattern
  and labelled with the model's name at its end;
- baselines (TIES, linear, and linear with a weight gradient over the blocks; the job's report.svg
  and the one drawn from merged.h5 as `recall export` reads it): a bar per model with its weight or
  share (the range where tensors differ), the base marked, density/lambda/normalize written out,
  and no model called the reference;
- a made-up report of 80 blocks and 8 models with names that need escaping (<, &, '): ticks every 5
  blocks, 8 distinct curve styles, still well-formed."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, Checks, run, tiny_llama, write_jsonl  # noqa: E402

check = Checks()
NS = "{http://www.w3.org/2000/svg}"
TOOL = os.path.join(os.environ.get("RECALL_BUILD_DIR", os.path.join(os.path.dirname(BIN), "..")), "bin", "report_tool")


def luminance(hex_colour):
    def lin(c):
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def parse(path, what):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        check(False, f"{what}: well-formed XML ({e})")
        return None
    check(root.tag == NS + "svg", f"{what}: well-formed SVG")
    return root


def renders(svg, what):
    png = svg[:-4] + ".png"
    p = subprocess.run(["rsvg-convert", "-o", png, svg], capture_output=True, text=True)
    ok = p.returncode == 0 and os.path.exists(png)
    width = height = 0
    if ok:
        head = open(png, "rb").read(24)
        ok = head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", head[16:24])
    check(ok and width == 960 and height > 150, f"{what}: rsvg-convert renders it ({width}x{height} PNG) {p.stderr.strip()}")


def texts(root):
    return [("".join(t.itertext()), float(t.get("x", 0)), float(t.get("y", 0)), t.get("fill"))
            for t in root.iter(NS + "text")]


def recall_checks(root, rep, what):
    L, M = len(rep["blocks"]), len(rep["models"])
    labels = texts(root)
    cells = [(r, r.find(NS + "title").text) for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    heat = [(float(re.search(r"weight ([-0-9.]+)", t).group(1)), r.get("fill"), t) for r, t in cells]
    heat_bottom = max(float(r.get("y")) + float(r.get("height")) for r, _ in cells) if cells else 0
    ticks = sorted({int(s) for s, x, y, _ in labels if s.isdigit() and heat_bottom < y < heat_bottom + 30})
    step = 1 if L <= 16 else 2 if L <= 32 else 5 if L <= 80 else 10
    want = [i for i in range(L) if i % step == 0]
    check(ticks == want and [int(s) for s, _, y, _ in labels if s.isdigit() and y > heat_bottom + 60] == want,
          f"{what}: block ticks {ticks} under the heatmap and the same under the curves")
    scale = root.find(f".//{NS}g[@id='colour-scale']")
    bands = sorted(((float(r.get("y")), r.get("fill")) for r in scale.iter(NS + "rect")), reverse=True) if scale is not None else []
    lum = [luminance(f) for _, f in bands]
    check(len(lum) >= 32 and all(b > a for a, b in zip(lum, lum[1:])) and lum[0] < 0.05 and lum[-1] > 0.6,
          f"{what}: the colour scale's {len(lum)} bands get lighter from the lowest value up (luminance "
          f"{lum[0]:.3f} -> {lum[-1]:.3f}, strictly monotone)" if lum else f"{what}: a colour scale")
    if scale is not None:
        x0 = float(next(scale.iter(NS + "rect")).get("x"))
        vals = [(y, float(s)) for s, x, y, _ in labels if x > x0 + 16 and re.fullmatch(r"[0-9.]+", s)]
        vals.sort()
        check(len(vals) >= 3 and all(a[1] > b[1] for a, b in zip(vals, vals[1:])),
              f"{what}: the colour scale has value labels rising upwards: {[v for _, v in vals]}")
    # Colours are 8-bit, so weights closer than 1% of their range may share one: compare the others.
    ws = [w for w, _, _ in heat]
    gap = 0.01 * (max(ws) - min(ws)) if ws else 0
    lum_of = sorted((w, luminance(f)) for w, f, _ in heat)
    darker = [(a, b) for i, a in enumerate(lum_of) for b in lum_of[i + 1:] if b[0] - a[0] > gap and not b[1] > a[1]]
    check(len(heat) == L * M and not darker,
          f"{what}: {len(heat)} heatmap cells, lighter where the weight is higher" + (f" -- not: {darker[:3]}" if darker else ""))
    if rep.get("check_weights", True):
        got = sorted(round(w, 4) for w, _, _ in heat)
        want_w = sorted(round(w, 4) for b in rep["blocks"] for w in b["weights"])
        check(got == want_w, f"{what}: the cells hold report.json's weights")
    curves = root.findall(f".//{NS}g[@class='curve']")
    styles = {(c.find(NS + "polyline").get("stroke"), c.find(NS + "polyline").get("stroke-dasharray")) for c in curves}
    names = [c.find(NS + "title").text for c in curves]
    npoints = [len(c.find(NS + "polyline").get("points").split()) for c in curves]
    check(names == rep["models"] and len(styles) == M and len({d for _, d in styles}) == M and npoints == [L] * M,
          f"{what}: one curve per model with {L} points, each its own colour and dash pattern")
    colour = {c.find(NS + "title").text: c.find(NS + "polyline").get("stroke") for c in curves}
    end_labels = {s.replace(" (reference)", ""): f for s, x, y, f in labels if f in colour.values()}
    check(all(end_labels.get(m) == colour[m] for m in rep["models"]),
          f"{what}: every curve is labelled with its model's name in its colour")


def baseline_checks(root, what, want, absent):
    words = " ".join(s for s, *_ in texts(root))
    missing = [w for w in want if w not in words]
    present = [w for w in absent if w in words]
    check(not missing and not present, f"{what}: says {want}" + (f" -- missing {missing}" if missing else "")
          + (f" -- should not say {present}" if present else ""))


def main():
    if shutil.which("rsvg-convert") is None:
        print("FAIL  rsvg-convert is missing: install Debian's librsvg2-bin (scripts/setup.sh does)")
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="recall-svg-")
    base = tiny_llama(f"{tmp}/base", seed=0)
    tiny_llama(f"{tmp}/math", seed=1, base_state=base, noise=0.02)
    tiny_llama(f"{tmp}/code", seed=2, base_state=base, noise=0.05)
    import numpy as np
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(16)])
    models = "\n".join(f"  - {{name: {n}, path: {tmp}/{n}}}" for n in ("base", "math", "code"))

    # ---- RECALL -----------------------------------------------------------------------------
    open(f"{tmp}/rec.yaml", "w").write(f"models:\n{models}\nreference: math\nmethod: recall\ndata: {tmp}/data.jsonl\n"
                                       f"typical: {{clusters: 4}}\noutput: {{dir: {tmp}/rec}}\n")
    run(["merge", "--config", f"{tmp}/rec.yaml", "--quiet"], np=1)
    svg = f"{tmp}/rec/report.svg"
    root = parse(svg, "RECALL report.svg")
    if root is not None:
        recall_checks(root, json.load(open(f"{tmp}/rec/report.json")), "RECALL report.svg")
    renders(svg, "RECALL report.svg")

    # ---- baselines --------------------------------------------------------------------------
    weighted = {"base": "", "math": ", params: {weight: 0.7}", "code": ", params: {weight: 0.3}"}
    ties_models = "\n".join(f"  - {{name: {n}, path: {tmp}/{n}{p}}}" for n, p in weighted.items())
    lin_models = "\n".join(f"  - {{name: {n}, path: {tmp}/{n}, params: {{weight: {w}}}}}"
                            for n, w in (("base", 2), ("math", 1), ("code", 1)))
    open(f"{tmp}/ties.yaml", "w").write(f"models:\n{ties_models}\nbase: base\nmethod: ties\n"
                                        f"params: {{density: 0.5, lambda: 0.9}}\noutput: {{dir: {tmp}/ties}}\n")
    open(f"{tmp}/lin.yaml", "w").write(f"models:\n{lin_models}\nmethod: linear\noutput: {{dir: {tmp}/lin}}\n")
    # A gradient: every model's weight goes from 1 (first block) to 3 (last block).
    open(f"{tmp}/grad.yaml", "w").write(f"models:\n{models}\nmethod: linear\nparams: {{weight: [1, 3]}}\n"
                                        f"output: {{dir: {tmp}/grad}}\n")
    for name, want, absent, bars in (
            ("ties", ["ties merge of 3 models", "weight of its task vector per model", "0.7", "0.3",
                      "base: the task vectors are differences to it", "density: math 0.5, code 0.5", "lambda: 0.9",
                      "normalize: true", "keeping the top 50%"], ["reference", "(ref)", "differs between tensors"], 2),
            ("lin", ["linear merge of 3 models", "share of the output per model", "0.5", "0.25", "normalize: true",
                     "divided by their sum"], ["reference", "base:", "density", "differs between tensors"], 3),
            ("grad", ["linear merge of 3 models", "weight per model", "1-3", "differs between tensors (gradients or filters"],
             ["reference", "share of the output"], 6)):
        run(["merge", "--config", f"{tmp}/{name}.yaml", "--quiet"], np=1)
        drawn = f"{tmp}/{name}-h5.svg"
        subprocess.run([TOOL, "svg-h5", f"{tmp}/{name}/merged.h5", drawn], check=True)
        for svg, what in ((f"{tmp}/{name}/report.svg", f"the {name} job's report.svg"),
                          (drawn, f"{name} report.svg from merged.h5 (as recall export reads it)")):
            root = parse(svg, what)
            if root is not None:
                baseline_checks(root, what, want, absent)
                n = len([r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None])
                check(n == bars, f"{what}: a bar (two where tensors differ) per weighted model ({n})")
            renders(svg, what)

    # ---- 80 blocks, 8 models, names to escape -----------------------------------------------
    names = ["base", "math", "code<&>", "chat's", "a-rather-long-model-name", "m5", "m6", "ref"]
    rng = np.random.default_rng(1)
    blocks = []
    for l in range(80):
        s = np.clip(1 - 0.004 * l * np.arange(1, 9) / 8 + rng.uniform(-0.02, 0.02, 8), 0, 1)
        s[7] = 1.0
        w = np.exp(s / 0.1) / np.exp(s / 0.1).sum()
        blocks.append({"index": l, "similarity": s.tolist(), "weights": w.tolist()})
    big = {"method": "recall", "models": names, "reference": "ref", "blocks": blocks, "non_block_weights": [0.125] * 8}
    json.dump(big, open(f"{tmp}/big.json", "w"))
    subprocess.run([TOOL, "svg-json", f"{tmp}/big.json", f"{tmp}/big.svg"], check=True)
    root = parse(f"{tmp}/big.svg", "80-block report.svg")
    if root is not None:
        recall_checks(root, big, "80-block report.svg")
    renders(f"{tmp}/big.svg", "80-block report.svg")

    shutil.rmtree(tmp)
    check.finish()


if __name__ == "__main__":
    main()
