"""Runs one query on Flink SQL (PyFlink, local mini-cluster, streaming mode) over a
directory of JSON-lines files: the filesystem connector's bounded source, a blackhole
sink. Prints one JSON line: {"job_seconds": ...} (from submitting the INSERT to the job's
end; JVM and Python start-up excluded)."""

import argparse
import json
import re
import time
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment


def statements(text):
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--query", required=True)
    p.add_argument("--ddl", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--cores", type=int, required=True)
    a = p.parse_args()

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    # As Nexmark's Flink configuration (conf/config.yaml), minus RocksDB and checkpoints:
    # the in-memory (hashmap) state backend, Flink's fastest.
    for key, value in {
        "parallelism.default": str(a.cores),
        "table.exec.resource.default-parallelism": str(a.cores),
        "table.exec.mini-batch.enabled": "true",
        "table.exec.mini-batch.allow-latency": "2s",
        "table.exec.mini-batch.size": "50000",
        "table.optimizer.distinct-agg.split.enabled": "true",
        "taskmanager.numberOfTaskSlots": str(a.cores),
    }.items():
        conf.set(key, value)
    ddl = Path(a.ddl).read_text().replace("${PATH}", "file://" + str(Path(a.data).resolve()))
    for s in statements(ddl):
        env.execute_sql(s)
    *setup, insert = statements(Path(a.query).read_text())
    for s in setup:
        env.execute_sql(s)
    assert re.match(r"(?is)insert\s", insert), insert
    started = time.perf_counter()
    env.execute_sql(insert).wait()
    print(json.dumps({"job_seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
