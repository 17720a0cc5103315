// MongoDB initialisation for docker-compose-infra.yaml. The mongo image runs the
// scripts in /docker-entrypoint-initdb.d/ once, when its data volume is empty, with
// mongosh connected as the root user to MONGO_INITDB_DATABASE.
//
// Creates the results database and the bookkeeping collections the aggregator and
// the dashboard share, with the indexes their queries need. Safe to run again.

const database = db.getSiblingDB(process.env.MONGO_INITDB_DATABASE || "streaming");

const existing = database.getCollectionNames();
for (const name of ["_pipeline_status", "_bad_records", "_late_records", "_alerts", "_result_schemas"]) {
  if (!existing.includes(name)) {
    database.createCollection(name);
  }
}

// Bad and late records are listed per pipeline; alert history per pipeline, newest first.
database.getCollection("_bad_records").createIndex({ pipeline: 1 });
database.getCollection("_late_records").createIndex({ pipeline: 1 });
database.getCollection("_alerts").createIndex({ pipeline: 1, at: -1 });

print(`mongo-init.js: database ${database.getName()} ready`);
