// MongoDB initialisation for docker-compose-infra.yaml. The mongo image runs the
// scripts in /docker-entrypoint-initdb.d/ once, when its data volume is empty, with
// mongosh connected as the root user to MONGO_INITDB_DATABASE (a temporary server on
// 127.0.0.1 only; the real one, with authentication, starts afterwards).
//
// Creates the services' user (MONGO_USER / MONGO_PASSWORD, in the admin database, with
// readWrite on the results database only), the bookkeeping collections the aggregator
// and the dashboard share with the indexes their queries need, and last the marker
// `_deployment` { _id: "mongo-init" } that deploy/mongo-healthcheck.js waits for.
// Safe to run again.

const databaseName = process.env.MONGO_INITDB_DATABASE || "streaming";
const database = db.getSiblingDB(databaseName);
const admin = db.getSiblingDB("admin");

const user = process.env.MONGO_USER;
const password = process.env.MONGO_PASSWORD;
if (!user || !password) {
  throw new Error("mongo-init.js: MONGO_USER and MONGO_PASSWORD must be set");
}
const roles = [{ role: "readWrite", db: databaseName }];
if (admin.getUser(user) === null) {
  admin.createUser({ user: user, pwd: password, roles: roles });
} else {
  admin.updateUser(user, { pwd: password, roles: roles });
}

const existing = database.getCollectionNames();
for (const name of ["_pipeline_status", "_bad_records", "_late_records", "_alerts", "_result_schemas"]) {
  if (!existing.includes(name)) {
    database.createCollection(name);
  }
}

// Bad and late records are listed per pipeline; alert history newest first.
database.getCollection("_bad_records").createIndex({ pipeline: 1 });
database.getCollection("_late_records").createIndex({ pipeline: 1 });
database.getCollection("_alerts").createIndex({ at: -1 });

// Last: the healthcheck passes only once everything above is done.
database.getCollection("_deployment").replaceOne(
  { _id: "mongo-init" },
  { _id: "mongo-init", user: user, finished_at: new Date() },
  { upsert: true },
);

print(`mongo-init.js: database ${databaseName} ready for user ${user}`);
