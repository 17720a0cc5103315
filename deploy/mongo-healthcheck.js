// The mongodb service's healthcheck (docker-compose-infra.yaml), run by mongosh
// connected without credentials to the container's own network address:
//
//   mongosh --quiet --norc "<hostname>:27017/admin" mongo-healthcheck.js
//
// Healthy means: the services' user (MONGO_USER / MONGO_PASSWORD) can log in, and
// deploy/mongo-init.js has finished (its marker, written last, is there). During the
// first start's initialisation neither holds (the temporary server listens on 127.0.0.1
// only, and the marker is not yet written), so the services that wait for a healthy
// mongodb never meet a half-initialised database. The password comes from the
// environment, never from the command line.

const databaseName = process.env.MONGO_INITDB_DATABASE || "streaming";
const admin = db.getSiblingDB("admin");
// Throws (exit code 1) if the user does not exist or the password is wrong.
admin.auth(process.env.MONGO_USER, process.env.MONGO_PASSWORD);
const marker = db.getSiblingDB(databaseName).getCollection("_deployment").findOne({ _id: "mongo-init" });
if (marker === null) {
  print(`mongo-healthcheck.js: ${databaseName} has no mongo-init marker yet`);
  quit(1);
}
