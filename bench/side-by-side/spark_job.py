"""Runs one query on Spark Structured Streaming (local[cores]) over a directory of
JSON-lines files: readStream.json with an explicit schema, withWatermark,
trigger(availableNow=True), the noop sink. Prints one JSON line:
{"job_seconds": ..., "input_rows": ...} (from defining the stream to the query's end;
JVM and Python start-up excluded)."""

import argparse
import json
import re
import time
from pathlib import Path

from pyspark.sql import SparkSession

SCHEMAS = {
    "bids": ("bid", "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP, extra STRING",
             "date_time", "4 seconds"),
    "interactions": ("interactions", "user_id BIGINT, item_id BIGINT, interaction_type STRING, timestamp TIMESTAMP",
                     "timestamp", "20 minutes"),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--query", required=True)
    p.add_argument("--dataset", required=True, choices=SCHEMAS)
    p.add_argument("--data", required=True)
    p.add_argument("--cores", type=int, required=True)
    p.add_argument("--checkpoint", required=True)
    a = p.parse_args()

    spark = (
        SparkSession.builder.master(f"local[{a.cores}]")
        .appName("side-by-side")
        .config("spark.sql.shuffle.partitions", str(a.cores))
        .config("spark.driver.memory", "4g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.streaming.schemaInference", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    view, schema, event_time, delay = SCHEMAS[a.dataset]
    text = Path(a.query).read_text()
    mode = re.search(r"(?m)^--\s*output_mode:\s*(\w+)", text).group(1)
    sql = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))

    started = time.perf_counter()
    stream = spark.readStream.schema(schema).json(str(Path(a.data).resolve())).withWatermark(event_time, delay)
    stream.createOrReplaceTempView(view)
    query = (
        spark.sql(sql)
        .writeStream.format("noop")
        .outputMode(mode)
        .option("checkpointLocation", a.checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    seconds = time.perf_counter() - started
    rows = sum(p["numInputRows"] for p in query.recentProgress)
    print(json.dumps({"job_seconds": seconds, "input_rows": rows, "batches": len(query.recentProgress)}))
    spark.stop()


if __name__ == "__main__":
    main()
