#!/usr/bin/env python3
"""Structural checks of the source tree (run by tests/python/test_structure.py in CI):

1. No include cycle between folders: folder A depends on folder B when a file of A
   (include/recall/A/* or src/A/*) includes "recall/B/...". The folder graph must be acyclic;
   a cycle is printed with one include that makes each edge.
2. No function longer than --max-lines (default 120) lines in src/ and jobs/: the lines from a
   function's opening brace to its closing one (lambdas count towards the function around them).
3. One distributed runtime: no MPI communication call (collective, point to point, MPI_Init,
   MPI_Finalize, MPI_Abort, communicator creation) in src/, jobs/ or include/ outside src/dist and
   include/recall/dist, which check every call and agree on failure. Passing an MPI_Comm on (to
   HDF5, to the dist layer) and asking MPI_Comm_rank/size are not calls of this kind.

Usage: scripts/check_structure.py [--root DIR] [--max-lines N]; exits 1 on a finding.
"""
import argparse
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"recall/([a-z_]+)/[^"]+"', re.M)


def folder_graph(root):
    """{folder: {dependency: (file, line)}} from include/recall/<f>/ and src/<f>/."""
    graph = {}
    for top in ("include/recall", "src"):
        base = os.path.join(root, top)
        for folder in sorted(os.listdir(base)):
            path = os.path.join(base, folder)
            if not os.path.isdir(path):
                continue
            deps = graph.setdefault(folder, {})
            for dirpath, _, files in os.walk(path):
                for fn in files:
                    if not fn.endswith((".h", ".cpp", ".cu")):
                        continue
                    full = os.path.join(dirpath, fn)
                    text = open(full, encoding="utf-8").read()
                    for m in INCLUDE.finditer(text):
                        dep = m.group(1)
                        if dep != folder and dep in ("util", "io", "model", "text", "merge", "config", "dist",
                                                      "engine", "pipeline", "sweep", "cli") + tuple(graph):
                            line = text.count("\n", 0, m.start()) + 1
                            deps.setdefault(dep, (os.path.relpath(full, root), line))
    return graph


def find_cycle(graph):
    """A list of folders forming a cycle, or None."""
    state = {}  # 0 visiting, 1 done

    def visit(n, stack):
        state[n] = 0
        stack.append(n)
        for d in sorted(graph.get(n, {})):
            if state.get(d) == 0:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d, stack)
                if c:
                    return c
        stack.pop()
        state[n] = 1
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n, [])
            if c:
                return c
    return None


def strip_code(text):
    """The text with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == 'R' and text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = text.find(")" + m.group(1) + '"', i) if m else -1
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


# MPI calls that communicate, start or stop MPI, or make communicators: only the dist layer makes them.
MPI_CALL = re.compile(
    r"\bMPI_(I?allreduce|I?allgatherv?|I?bcast|I?barrier|I?reduce(_scatter(_block)?)?|I?gatherv?|I?scatterv?|"
    r"I?alltoall[vw]?|I?scan|I?exscan|[IBSR]?send|Issend|Irsend|Ibsend|Sendrecv(_replace)?|I?recv|I?m?probe|"
    r"Init|Init_thread|Finalize|Abort|Comm_split(_type)?|Comm_dup|Comm_create(_group)?|Wait(all|any|some)?|"
    r"Test(all|any|some)?)\s*\(", re.I)
MPI_ROOTS = ("src", "jobs", "include")
MPI_LAYER = ("src/dist/", "include/recall/dist/")
# Files allowed to call MPI directly outside the dist layer: none (issue 15 item 3).
MPI_ALLOWED = ()


def mpi_calls(root):
    """(relative path, line, call) of every MPI call outside the dist layer and the allow-list."""
    found = []
    for top in MPI_ROOTS:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for fn in sorted(files):
                if not fn.endswith((".cpp", ".cu", ".h")):
                    continue
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if rel.startswith(MPI_LAYER) or rel in MPI_ALLOWED:
                    continue
                code = strip_code(open(path, encoding="utf-8").read())
                for m in MPI_CALL.finditer(code):
                    found.append((rel, code.count("\n", 0, m.start()) + 1, m.group(0).rstrip("( \t")))
    return found


SCOPE = re.compile(r"\b(namespace|class|struct|union|enum)\b[^;{}()]*$|extern\s*$|=\s*$")


def long_functions(path, max_lines):
    """(line, length, header) of every function body longer than max_lines."""
    code = strip_code(open(path, encoding="utf-8").read())
    found, stack, start = [], [], 0
    for i, c in enumerate(code):
        if c == "{":
            header = code[start:i].strip().split("\n")[-3:]
            head = " ".join(h.strip() for h in header)
            outer_is_scope = all(kind == "scope" for kind, _ in stack)
            is_function = outer_is_scope and ")" in head and not SCOPE.search(head)
            stack.append(("function" if is_function else ("scope" if outer_is_scope else "block"), i))
            start = i + 1
        elif c == "}":
            if stack:
                kind, at = stack.pop()
                if kind == "function":
                    first = code.count("\n", 0, at) + 1
                    last = code.count("\n", 0, i) + 1
                    if last - first + 1 > max_lines:
                        found.append((first, last - first + 1))
            start = i + 1
        elif c == ";":
            start = i + 1
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--max-lines", type=int, default=120)
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    bad = 0
    graph = folder_graph(root)
    cycle = find_cycle(graph)
    if cycle:
        bad += 1
        print("include cycle between folders: " + " -> ".join(cycle))
        for x, y in zip(cycle, cycle[1:]):
            f, line = graph[x][y]
            print(f"  {x} -> {y}: {f}:{line}")
    else:
        order = []
        remaining = {k: set(v) for k, v in graph.items()}
        while remaining:
            ready = sorted(k for k, v in remaining.items() if not (v & set(remaining)))
            order += ready
            for k in ready:
                del remaining[k]
        print("folders, lowest first: " + " < ".join(order))
    for top in ("src", "jobs"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for fn in sorted(files):
                if fn.endswith((".cpp", ".cu")):
                    path = os.path.join(dirpath, fn)
                    for line, n in long_functions(path, a.max_lines):
                        bad += 1
                        print(f"{os.path.relpath(path, root)}:{line}: function of {n} lines (at most {a.max_lines})")
    for rel, line, call in mpi_calls(root):
        bad += 1
        print(f"{rel}:{line}: {call} outside the dist layer (use recall/dist: collectives.h, failure.h, context.h)")
    print("structure: " + ("ok" if not bad else f"{bad} finding(s)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
