#!/usr/bin/python3
"""Summarise bench/churn/run.sh's logs as Markdown, with the issue's targets.

usage: report.py LOGDIR RUNS TOOL...
"""
import json
import os
import re
import statistics
import sys

logdir, runs, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
WHAT = {
    "orch-full": "orch run churn-csv.yaml: ingest, preprocess, features, train, validate, deploy",
    "orch-ipf": "orch run churn-csv.yaml features: ingest + preprocess + features (3 Parquet files)",
    "pandas": "churn_pipeline.py: read, preprocess, features, logistic regression, AUC, pickle",
    "polars": "polars_churn.mjs MODE=fused: read + preprocess + features + Parquet",
    "duckdb": "duckdb_churn.mjs MODE=fused: read + preprocess + features + Parquet",
}


def read(path):
    with open(path) as f:
        return f.read()


def timev(path):
    """wall s, CPU s (user + system), peak RSS GiB from a /usr/bin/time -v report."""
    t = read(path)
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
    wall = 0.0
    for part in m.split(":"):
        wall = wall * 60 + float(part)
    user = float(re.search(r"User time \(seconds\): (\S+)", t).group(1))
    sys_ = float(re.search(r"System time \(seconds\): (\S+)", t).group(1))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    return wall, user + sys_, rss / (1 << 20)


def dur(s):
    """orch's durations: 16ms, 4.1s, 1m2.5s."""
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|µs|us|ns|h|m|s)", s):
        total += float(num) * {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def steps(tool, out):
    """Per-step seconds as the tool reports them."""
    st = {}
    if tool.startswith("orch"):
        for m in re.finditer(r"^DONE\s+(\S+)\s+\S+\s+(\S+)", out, re.M):
            st[m.group(1)] = dur(m.group(2))
    else:
        for m in re.finditer(r"^step (\S+) ([\d.]+)", out, re.M):
            st[m.group(1)] = float(m.group(2))
    return st


res = {}
for tool in tools:
    rows = []
    for r in range(1, runs + 1):
        base = os.path.join(logdir, f"{tool}.{r}")
        if not os.path.exists(base + ".time"):
            continue
        wall, cpu, rss = timev(base + ".time")
        out = read(base + ".out")
        rows.append({"wall": wall, "cpu": cpu, "rss": rss, "steps": steps(tool, out), "out": out})
    if rows:
        res[tool] = rows


def med(xs):
    return statistics.median(xs)


def rng(xs):
    return f"{med(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


print("| tool | what | wall s, median (min–max) | CPU s | peak RSS GiB | steps, median s |")
print("|---|---|---|---|---|---|")
for tool, rows in res.items():
    names = list(rows[0]["steps"])
    st = ", ".join(f"{n} {med([r['steps'].get(n, 0) for r in rows]):.2f}" for n in names)
    print(f"| {tool} | {WHAT.get(tool, '')} | {rng([r['wall'] for r in rows])} | "
          f"{med([r['cpu'] for r in rows]):.2f} | {med([r['rss'] for r in rows]):.2f} | {st} |")

for name in ("orch-warm", "orch-edit"):
    p = os.path.join(logdir, f"{name}.1.time")
    if os.path.exists(p):
        wall, cpu, rss = timev(p)
        out = read(os.path.join(logdir, f"{name}.1.out"))
        summary = out.strip().splitlines()[-1]
        print(f"| {name} | {'rerun, nothing changed' if name == 'orch-warm' else 'rerun after -p l2=0.5'} | "
              f"{wall:.2f} | {cpu:.2f} | {rss:.2f} | {summary.split(' · ')[0]} |")


def pairs(a, b, what="wall"):
    """Per-round ratios a/b of wall (or CPU) time (rounds are the alternating pairs)."""
    if a not in res or b not in res:
        return None
    return [x[what] / y[what] for x, y in zip(res[a], res[b])]


print()
print("Ratios per round (wall; CPU = user + system, less sensitive to other load on the machine):")
for a, b in (("orch-ipf", "polars"), ("orch-ipf", "duckdb"), ("pandas", "orch-full")):
    w, c = pairs(a, b), pairs(a, b, "cpu")
    if w:
        print(f"- {a} ÷ {b}: wall {rng(w)}, CPU {rng(c)}")


print()
print("Targets (issue #3, Performance):")
verdicts = []


def target(ok, text):
    verdicts.append(ok)
    print(f"- {'PASS' if ok else 'FAIL'}: {text}")


r = pairs("orch-ipf", "polars")
if r:
    target(med(r) <= 1.0, f"ingest + preprocess + features + Parquet no slower than Polars: "
           f"orch ÷ Polars wall = {rng(r)} per round, CPU {rng(pairs('orch-ipf', 'polars', 'cpu'))}")
if "orch-ipf" in res:
    gib = max(x["rss"] for x in res["orch-ipf"])
    target(gib < 1.0, f"ingest + preprocess + features peak memory under 1 GiB: {gib:.2f} GiB (worst round)")
r = pairs("pandas", "orch-full")
if r:
    target(med(r) >= 5.0, f"whole pipeline at least 5× faster than pandas (with training and AUC): "
           f"pandas ÷ orch wall = {rng(r)} per round, CPU {rng(pairs('pandas', 'orch-full', 'cpu'))}")
rep = os.path.join(logdir, "orch-report.json")
if os.path.exists(rep):
    auc = json.load(open(rep))["auc"]
    pauc = [float(m.group(1)) for x in res.get("pandas", []) for m in [re.search(r"auc ([\d.]+)", x["out"])] if m]
    ptxt = f", pandas {pauc[0]:.4f}" if pauc else ""
    target(auc >= 0.810, f"AUC no lower than the reference's 0.810: orch {auc:.4f}{ptxt}")
p = os.path.join(logdir, "orch-warm.1.out")
if os.path.exists(p):
    out = read(p)
    target(re.search(r": 6 cached, 0 ran, 0 failed", out) is not None, "second run all HIT: " + out.strip().splitlines()[-1].split(" · ")[0])
p = os.path.join(logdir, "orch-edit.1.out")
if os.path.exists(p):
    out = read(p)
    plan = read(os.path.join(logdir, "orch-plan-edit.1.out"))
    ran = re.findall(r"^RUN\s+(\S+)", out, re.M)
    planned = all(re.search(rf"^HIT\s+{s}\b", plan, re.M) for s in ("ingest", "preprocess", "features"))
    ok = sorted(ran) == ["deploy", "train", "validate"] and planned
    target(ok, f"train param edit runs only {', '.join(ran)} (plan said HIT for ingest, preprocess, features: {planned}); "
           "no time in ingest / preprocess / features")
