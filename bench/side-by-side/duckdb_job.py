"""Runs one query on DuckDB as a batch over read_json of the files, threads = cores.
Prints one JSON line: {"job_seconds": ..., "rows": ...} (the query, materialised, and
nothing else)."""

import argparse
import json
import time
from pathlib import Path

import duckdb

COLUMNS = {
    "bids": "{auction: 'BIGINT', bidder: 'BIGINT', price: 'BIGINT', channel: 'VARCHAR', url: 'VARCHAR', "
            "date_time: 'TIMESTAMP', extra: 'VARCHAR'}",
    "interactions": "{user_id: 'BIGINT', item_id: 'BIGINT', interaction_type: 'VARCHAR', timestamp: 'TIMESTAMP'}",
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--query", required=True)
    p.add_argument("--dataset", required=True, choices=COLUMNS)
    p.add_argument("--data", required=True)
    p.add_argument("--cores", type=int, required=True)
    a = p.parse_args()

    source = (f"read_json('{Path(a.data).resolve()}/*.jsonl', format = 'newline_delimited', "
              f"columns = {COLUMNS[a.dataset]})")
    sql = Path(a.query).read_text().replace("${SOURCE}", source)
    con = duckdb.connect()
    con.execute(f"SET threads = {a.cores}")
    con.execute("SET preserve_insertion_order = false")
    started = time.perf_counter()
    con.execute(f"CREATE TEMP TABLE result AS {sql}")
    seconds = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM result").fetchone()[0]
    print(json.dumps({"job_seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
