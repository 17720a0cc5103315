"""Side-by-side benchmark: ours, Flink SQL, Spark Structured Streaming and DuckDB (batch,
the ceiling) on the same generated files with the same queries, at 1 and 2 cores.
Run through run.sh, which builds, installs the peers and calls this with the venv's Python.

Per query and core count, each engine runs under `taskset -c 0` (1 core) or `-c 0,1`
(2 cores); its whole process tree's resident memory is sampled every 100 ms.
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, data set, events, what it is
QUERIES = [
    ("interactions_5m", "interactions", 5_000_000, "per user x type x 5-minute tumbling window"),
    ("q17", "bids", 3_000_000, "Nexmark q17: per auction per day"),
    ("q15", "bids", 3_000_000, "Nexmark q15: per day, COUNT DISTINCT with FILTERs"),
    ("q16", "bids", 3_000_000, "Nexmark q16: per channel per day, COUNT DISTINCT with FILTERs"),
    ("q11", "bids", 1_000_000, "Nexmark q11: session window per bidder (10 s gap)"),
    ("q5_hop", "bids", 1_000_000, "Nexmark q5 without its join: hopping 10 s / 2 s count per auction"),
]
SCHEMAS = {"interactions": "schemas/interactions.sql", "bids": "schemas/nexmark_bids.sql"}
# Generator settings: interactions as `cargo bench --bench pipelines` makes them; bids at
# Nexmark's default rate of 10,000 events/s (persons and auctions included).
GENERATE = {
    "interactions": ["--dataset", "interactions", "--events-per-second", "100", "--out-of-order-share", "0.01"],
    "bids": ["--dataset", "bids", "--events-per-second", "10000"],
}
ENGINES = ["ours", "flink", "spark", "duckdb"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def generate(bin_dir, data_root, dataset, count):
    directory = data_root / f"{dataset}-{count}"
    if (directory / ".complete").exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    log(f"generating {count} {dataset} into {directory}")
    started = time.perf_counter()
    subprocess.run(
        [str(bin_dir / "generator"), "--count", str(count), "--batch-size", "100000", "--seed", "1",
         "--out", str(directory), *GENERATE[dataset]],
        check=True,
    )
    (directory / ".complete").write_bytes(b"")
    log(f"  {time.perf_counter() - started:.1f} s")
    return directory


def process_tree_rss(root):
    """Resident bytes of `root` and all its descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


def run(command, cores, log_file, env=None):
    """Runs `command` pinned to the first `cores` cores; returns (exit code, wall seconds,
    peak RSS of its process tree, stdout). stderr goes to `log_file`."""
    cpus = ",".join(str(c) for c in range(cores))
    out_file = Path(str(log_file) + ".out")
    started = time.perf_counter()
    with open(log_file, "w") as err, open(out_file, "w") as out:
        child = subprocess.Popen(["taskset", "-c", cpus, *command], stdout=out, stderr=err,
                                 env={**os.environ, **(env or {})})
        peak = 0
        while child.poll() is None:
            peak = max(peak, process_tree_rss(child.pid))
            time.sleep(0.1)
    return child.returncode, time.perf_counter() - started, peak, out_file.read_text(errors="replace")


def last_json(stdout):
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def tail(path, lines=6):
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def first_error(path):
    """The most telling line of a failed run's log."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for pattern in (r"Error|Exception", r"error|failed"):
        for line in lines:
            if re.search(pattern, line):
                return line.strip()[:400]
    return (lines[-1] if lines else "").strip()[:400]


def run_ours(args, name, dataset, data, cores, work):
    sql = work / f"{name}.sql"
    shutil.copy(HERE / "queries" / "ours" / f"{name}.sql", sql)
    db = work / "results.sqlite"
    command = [str(args.bin_dir / "aggregator"), "--sql", str(sql), "--source", f"file:{data}",
               "--source-schema", str(args.repo / SCHEMAS[dataset]), "--sink", f"sqlite:{db}",
               "--checkpoint-dir", str(work / "checkpoints"), "--available-now",
               "--summary-json", str(work / "summary.json")]
    if args.ours_workers:
        command += ["--workers", str(cores)]
    code, wall, rss, _ = run(command, cores, work / "ours.log", env={"RUST_LOG": "warn"})
    result = {"code": code, "seconds": wall, "wall": wall, "rss": rss, "log": str(work / "ours.log")}
    if code != 0:
        result["error"] = first_error(work / "ours.log")
        return result
    try:
        summary = json.loads((work / "summary.json").read_text())
        result["summary"] = summary
    except (OSError, ValueError):
        pass
    try:
        with sqlite3.connect(db) as con:
            result["rows"] = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    except sqlite3.Error as e:
        result["error"] = f"reading the result table {name!r}: {e}"
    return result


def run_peer(args, engine, name, dataset, data, cores, work):
    python = sys.executable
    q = HERE / "queries"
    if engine == "flink":
        command = [python, str(HERE / "flink_job.py"), "--query", str(q / "flink" / f"{name}.sql"),
                   "--ddl", str(q / "flink" / f"ddl_{dataset}.sql"), "--data", str(data), "--cores", str(cores)]
    elif engine == "spark":
        command = [python, str(HERE / "spark_job.py"), "--query", str(q / "spark" / f"{name}.sql"),
                   "--dataset", dataset, "--data", str(data), "--cores", str(cores),
                   "--checkpoint", str(work / "spark-checkpoint")]
    else:
        command = [python, str(HERE / "duckdb_job.py"), "--query", str(q / "duckdb" / f"{name}.sql"),
                   "--dataset", dataset, "--data", str(data), "--cores", str(cores)]
    log_file = work / f"{engine}.log"
    code, wall, rss, stdout = run(command, cores, log_file)
    out = last_json(stdout)
    result = {"code": code, "wall": wall, "rss": rss, "log": str(log_file), **out}
    # DuckDB: the query alone (the process start is Python's); Flink and Spark: the job time
    # measured in the driver, without JVM and Python start-up.
    result["seconds"] = out.get("job_seconds")
    if code != 0 or "job_seconds" not in out:
        result["error"] = first_error(log_file) or f"exit code {code}"
    return result


def fmt_rate(events, seconds):
    return f"{events / seconds:,.0f}" if seconds else "—"


def fmt_ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--bin-dir", type=Path, required=True)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--queries", default=os.environ.get("QUERIES", ""))
    p.add_argument("--cores", default=os.environ.get("CORES", "1 2"))
    p.add_argument("--engines", default=os.environ.get("ENGINES", " ".join(ENGINES)),
                   help="the engines to run (the table also shows the others' latest stored results)")
    p.add_argument("--scale", type=float, default=float(os.environ.get("EVENTS_SCALE", "1")))
    args = p.parse_args()

    chosen = [q for q in QUERIES if not args.queries or q[0] in re.split(r"[ ,]+", args.queries)]
    if not chosen:
        sys.exit(f"QUERIES={args.queries!r} names none of {[q[0] for q in QUERIES]}")
    cores_list = [int(c) for c in re.split(r"[ ,]+", args.cores.strip())]
    engines = [e for e in re.split(r"[ ,]+", args.engines.strip()) if e]
    if "ours" in engines:
        help_text = subprocess.run([str(args.bin_dir / "aggregator"), "--help"], capture_output=True, text=True).stdout
        args.ours_workers = "--workers" in help_text
        log(f"ours: {args.bin_dir / 'aggregator'}" + (" (--workers = cores)" if args.ours_workers else " (no --workers flag)"))
    args.data_root.mkdir(parents=True, exist_ok=True)

    # Every run's result is kept in results.json (the latest per query, events, cores and
    # engine), so ENGINES=... runs only some engines and the table shows the others' latest.
    store = args.data_root / "results.json"
    stored = json.loads(store.read_text()) if store.exists() else {}
    rows = []
    for name, dataset, events, what in chosen:
        count = max(1000, int(events * args.scale))
        data = generate(args.bin_dir, args.data_root, dataset, count)
        for cores in cores_list:
            results = {}
            for engine in engines:
                (args.data_root / "runs").mkdir(exist_ok=True)
                work = Path(tempfile.mkdtemp(prefix=f"{name}-{cores}c-{engine}-", dir=args.data_root / "runs"))
                log(f"{name} ({count:,} {dataset}), {cores} core(s): {engine} ...")
                if engine == "ours":
                    r = run_ours(args, name, dataset, data, cores, work)
                else:
                    r = run_peer(args, engine, name, dataset, data, cores, work)
                r["when"] = time.strftime("%Y-%m-%d %H:%M")
                results[engine] = r
                stored[f"{name}|{count}|{cores}|{engine}"] = r
                store.write_text(json.dumps(stored, indent=1))
                if r.get("error"):
                    log(f"  FAILED: {r['error']}\n  (log: {r['log']})")
                else:
                    extra = f", job {r['seconds']:.1f} s" if engine in ("flink", "spark") else ""
                    log(f"  {count / r['seconds']:,.0f} events/s, wall {r['wall']:.1f} s{extra}, "
                        f"peak RSS {r['rss'] / 2**20:,.0f} MiB")
                if not r.get("error") and not os.environ.get("KEEP_RUNS"):
                    shutil.rmtree(work, ignore_errors=True)  # failed runs keep their logs
                if engine == "spark" and r.get("input_rows") not in (None, count):
                    log(f"  !!! Spark read {r['input_rows']} rows, not {count}")
            for engine in ENGINES:
                if engine not in results and f"{name}|{count}|{cores}|{engine}" in stored:
                    results[engine] = stored[f"{name}|{count}|{cores}|{engine}"]
            check = ""
            ours, duck = results.get("ours", {}), results.get("duckdb", {})
            if "rows" in ours and "rows" in duck:
                if ours["rows"] == duck["rows"]:
                    check = f"{ours['rows']:,} = {duck['rows']:,}"
                else:
                    check = f"MISMATCH ours {ours['rows']:,} vs DuckDB {duck['rows']:,}"
                    log(f"\n!!!!!! {name} at {cores} core(s): result rows differ: ours {ours['rows']} "
                        f"vs DuckDB {duck['rows']} !!!!!!\n")
            rows.append((name, what, dataset, count, cores, results, check))
    report(args, rows, [e for e in ENGINES if any(e in r[5] for r in rows)])


def report(args, rows, engines):
    def seconds(r):
        return r.get("seconds") if r and not r.get("error") else None

    lines = [
        "| query | events | cores | " + " | ".join(f"{e} events/s" for e in engines)
        + " | ours/Flink | ours/Spark | ours/DuckDB | " + " | ".join(f"{e} peak RSS MiB" for e in engines)
        + " | rows ours = DuckDB |",
        "|" + " --- |" * (3 + 2 * len(engines) + 4),
    ]
    failures = []
    for name, what, dataset, count, cores, results, check in rows:
        rate = {e: count / seconds(results.get(e)) if seconds(results.get(e)) else None for e in engines}
        cells = []
        for e in engines:
            r = results.get(e, {})
            if r.get("error"):
                cells.append("failed")
                failures.append(f"- {name}, {cores} core(s), {e}: {r['error']} (log: {r['log']})")
            else:
                cells.append(fmt_rate(count, seconds(r)) + (" (approx)" if e == "spark" and name in ("q15", "q16") else ""))
        rss = [f"{results[e]['rss'] / 2**20:,.0f}" if e in results else "—" for e in engines]
        lines.append(
            f"| {name} | {count:,} {dataset} | {cores} | " + " | ".join(cells)
            + f" | {fmt_ratio(rate.get('ours'), rate.get('flink'))} | {fmt_ratio(rate.get('ours'), rate.get('spark'))}"
            + f" | {fmt_ratio(rate.get('ours'), rate.get('duckdb'))} | " + " | ".join(rss) + f" | {check or '—'} |"
        )
    walls = ["", "Whole-process wall time, s (start-up included):", "",
             "| query | cores | " + " | ".join(engines) + " |", "|" + " --- |" * (2 + len(engines))]
    for name, what, dataset, count, cores, results, check in rows:
        walls.append(f"| {name} | {cores} | " + " | ".join(
            f"{results[e]['wall']:.1f}" if e in results else "—" for e in engines) + " |")
    notes = [
        "",
        "events/s = events / seconds. Ours: wall time of the whole `aggregator --available-now` process "
        "(start-up, reading, aggregating, writing every change into SQLite, the final checkpoint). "
        "DuckDB (batch, the ceiling): the query alone, materialised as a table, threads = cores. "
        "Flink and Spark: the job time measured inside the driver, from submitting the query to its "
        "completion — JVM and Python start-up excluded (their whole-process wall times are below). "
        "Peak RSS: the whole process tree (the JVM under Python for Flink and Spark), sampled every 100 ms. "
        "Each engine runs under `taskset` on the first N cores; engines not run this time show their "
        "latest result stored in results.json.  Spark q15/q16 use approx_count_distinct "
        "(Structured Streaming refuses COUNT(DISTINCT)). Queries: " +
        "; ".join(f"`{n}` {w}" for n, _, _, w in QUERIES) + ".",
    ]
    if failures:
        notes += ["", "Failed runs:", ""] + failures
    text = "\n".join(lines + walls + notes) + "\n"
    print("\n" + text)
    (args.data_root / "results.md").write_text(f"# Side-by-side ({time.strftime('%Y-%m-%d %H:%M')})\n\n" + text)
    log(f"written to {args.data_root / 'results.md'}")


if __name__ == "__main__":
    main()
