// Drives the official Mixpanel Node library against a Veil collector.
//
// The Go test TestNodeSDK starts Veil, runs this script and then checks
// ClickHouse. Every call's outcome is printed as one JSON line:
//   {"kind":"result","op":"people.set","error":null}
// and every HTTP exchange the library made as
//   {"kind":"request","method":"GET","path":"/engage","query":["data","ip","verbose"],
//    "content_type":"","auth":"Basic","status":200,"body":"1"}
// The script itself never judges: the Go test does.
//
// Environment:
//   VEIL_HOST      host:port of the collector
//   VEIL_PROTOCOL  http or https (the library sends a secret over https only)
//   VEIL_TOKEN     project token
//   VEIL_SECRET    project API secret (for /import)
//   VEIL_NOW_MS    the test's clock, so that expected times are exact
//   VEIL_SA_USER, VEIL_SA_SECRET, VEIL_PROJECT_ID
//                  a service account allowed to import into the project
"use strict";

const http = require("http");
const https = require("https");

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// Record each request the library makes and the answer it gets, by wrapping
// request() of the http and https modules the library calls at send time.
for (const [proto, mod] of [["http", http], ["https", https]]) {
  const orig = mod.request;
  mod.request = function (options, cb) {
    const u = new URL(options.path, proto + "://" + options.host);
    const rec = {
      kind: "request",
      method: options.method,
      path: u.pathname,
      query: [...new Set(u.searchParams.keys())].sort(),
      content_type: (options.headers && options.headers["Content-Type"]) || "",
      auth: options.headers && options.headers["Authorization"] ? options.headers["Authorization"].split(" ")[0] : "",
    };
    const req = orig.call(mod, options, function (res) {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        rec.status = res.statusCode;
        rec.body = body.length > 300 ? body.slice(0, 300) + "…" : body;
        emit(rec);
      });
      if (cb) cb(res);
    });
    req.on("error", (e) => {
      rec.status = 0;
      rec.body = "network error: " + e.message;
      emit(rec);
    });
    return req;
  };
}

const Mixpanel = require("mixpanel");

const host = process.env.VEIL_HOST;
const protocol = process.env.VEIL_PROTOCOL || "https";
const token = process.env.VEIL_TOKEN;
const secret = process.env.VEIL_SECRET;
const now = Number(process.env.VEIL_NOW_MS);
const saUser = process.env.VEIL_SA_USER;
const saSecret = process.env.VEIL_SA_SECRET;
const projectID = process.env.VEIL_PROJECT_ID;
if (!host || !token || !secret || !now || !saUser || !saSecret || !projectID) {
  console.error("run.js: VEIL_HOST, VEIL_TOKEN, VEIL_SECRET, VEIL_NOW_MS, VEIL_SA_USER, VEIL_SA_SECRET and VEIL_PROJECT_ID are required");
  process.exit(2);
}

// The library warns on stderr that api secrets are deprecated; keep stdout
// for results only.
const quietLogger = {
  trace() {},
  debug() {},
  info() {},
  warn(...a) { console.error(...a); },
  error(...a) { console.error(...a); },
};

const base = { host, protocol, secret, keepAlive: false, logger: quietLogger };
const mp = Mixpanel.init(token, { ...base });
const mpVerbose = Mixpanel.init(token, { ...base, verbose: true });
const mpWrongSecret = Mixpanel.init(token, { ...base, secret: "not-the-secret" });
// Service accounts, the library's recommended /import authentication.
const { ServiceAccountCredentials } = Mixpanel;
const noSecret = { host, protocol, keepAlive: false, logger: quietLogger };
const mpAccount = Mixpanel.init(token, {
  ...noSecret,
  credentials: new ServiceAccountCredentials(saUser, saSecret, projectID),
});
const mpWrongAccount = Mixpanel.init(token, {
  ...noSecret,
  credentials: new ServiceAccountCredentials(saUser, "not-the-account-secret", projectID),
});

function errText(err) {
  if (!err) return null;
  if (Array.isArray(err)) return err.map((e) => String((e && e.message) || e)).join("; ");
  return String(err.message || err);
}

// call runs one library call and waits for its callback, so that the
// operations on one profile reach Veil in the order written here.
function call(op, fn) {
  return new Promise((resolve) => {
    let done = false;
    const timer = setTimeout(() => finish("no callback within 15 s"), 15000);
    function finish(err) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      emit({ kind: "result", op, error: errText(err) });
      resolve();
    }
    try {
      fn(finish);
    } catch (e) {
      finish(e);
    }
  });
}

const minute = 60 * 1000;
const day = 24 * 60 * minute;

async function main() {
  // Events.
  await call("track", (cb) =>
    mp.track("node single", { distinct_id: "node-user-1", plan: "pro", label: "party 🎉" }, cb));
  await call("track with time and insert_id", (cb) =>
    mp.track("node timed", { distinct_id: "node-user-1", time: new Date(now - minute), $insert_id: "node-timed-1" }, cb));
  const batch = [];
  for (let i = 0; i < 60; i++) {
    batch.push({
      event: "node batch",
      properties: {
        distinct_id: "node-user-" + ((i % 3) + 1),
        // Dates become milliseconds in the library; plain numbers pass as
        // they are, here seconds.
        time: i % 2 === 0 ? new Date(now - i * 1000) : Math.floor((now - i * 1000) / 1000),
        $insert_id: "node-batch-" + i,
        i,
      },
    });
  }
  await call("track_batch", (cb) => mp.track_batch(batch, cb));
  await call("alias", (cb) => mp.alias("node-user-1", "node-alias-1", cb));
  await call("import", (cb) =>
    mp.import("node imported", new Date(now - 10 * day), { distinct_id: "node-user-2", $insert_id: "node-import-1" }, cb));
  const imports = [];
  for (let i = 0; i < 5; i++) {
    imports.push({
      event: "node import batch",
      properties: { distinct_id: "node-user-3", time: new Date(now - 30 * day + i * 1000), $insert_id: "node-import-batch-" + i },
    });
  }
  await call("import_batch", (cb) => mp.import_batch(imports, cb));

  // People: node-user-1 ends as
  //   {plan: "pro", first_seen: "2024-01-01", logins: 3, pages: ["home", "pricing"],
  //    tags: ["b"], $transactions: [{$amount: 29.99, $time: "2024-03-01T10:00:00.000Z"}]}
  await call("people.set", (cb) => mp.people.set("node-user-1", { plan: "pro", seats: 3, tags: ["a"] }, cb));
  await call("people.set_once", (cb) => mp.people.set_once("node-user-1", { first_seen: "2024-01-01", plan: "free" }, cb));
  await call("people.increment", (cb) => mp.people.increment("node-user-1", { logins: 2 }, cb));
  await call("people.increment by one", (cb) => mp.people.increment("node-user-1", "logins", cb));
  await call("people.append", (cb) => mp.people.append("node-user-1", "pages", "home", cb));
  await call("people.append again", (cb) => mp.people.append("node-user-1", "pages", "pricing", cb));
  await call("people.union", (cb) => mp.people.union("node-user-1", { tags: ["b", "a"] }, cb));
  await call("people.remove", (cb) => mp.people.remove("node-user-1", { tags: "a" }, cb));
  await call("people.unset", (cb) => mp.people.unset("node-user-1", "seats", cb));
  await call("people.track_charge", (cb) =>
    mp.people.track_charge("node-user-1", 29.99, { $time: new Date("2024-03-01T10:00:00Z") }, cb));
  // node-user-3: a charge, then cleared: $transactions is [].
  await call("people.track_charge user 3", (cb) => mp.people.track_charge("node-user-3", 5, cb));
  await call("people.clear_charges", (cb) => mp.people.clear_charges("node-user-3", cb));
  // node-user-2: set, then deleted: no profile.
  await call("people.set user 2", (cb) => mp.people.set("node-user-2", { plan: "team" }, cb));
  await call("people.delete_user", (cb) => mp.people.delete_user("node-user-2", cb));

  // Groups: company/acme ends as {industry: "widgets", founded: 1999, products: ["anvil"]}.
  await call("groups.set", (cb) => mp.groups.set("company", "acme", { industry: "widgets", size: 10 }, cb));
  await call("groups.set_once", (cb) => mp.groups.set_once("company", "acme", { founded: 1999, industry: "ignored" }, cb));
  await call("groups.union", (cb) => mp.groups.union("company", "acme", { products: ["anvil", "rocket"] }, cb));
  await call("groups.remove", (cb) => mp.groups.remove("company", "acme", { products: "rocket" }, cb));
  await call("groups.unset", (cb) => mp.groups.unset("company", "acme", "size", cb));
  // company/gone: set, then deleted.
  await call("groups.set gone", (cb) => mp.groups.set("company", "gone", { industry: "none" }, cb));
  await call("groups.delete_group", (cb) => mp.groups.delete_group("company", "gone", cb));

  // verbose: the library reads a JSON answer and requires status 1.
  await call("verbose track", (cb) => mpVerbose.track("node verbose", { distinct_id: "node-user-4" }, cb));
  await call("verbose import", (cb) =>
    mpVerbose.import("node verbose import", new Date(now - 7 * day), { distinct_id: "node-user-4" }, cb));
  await call("verbose people.set", (cb) => mpVerbose.people.set("node-user-4", { plan: "verbose" }, cb));
  await call("verbose groups.set", (cb) => mpVerbose.groups.set("company", "verbose", { industry: "json" }, cb));

  await call("service account import", (cb) =>
    mpAccount.import("node service account import", new Date(now - 3 * day), { distinct_id: "node-user-4", $insert_id: "node-sa-1" }, cb));

  // Wrong credentials must be refused, and nothing stored.
  await call("import with a wrong secret", (cb) =>
    mpWrongSecret.import("node unauthorised import", new Date(now - 10 * day), { distinct_id: "node-user-5" }, cb));
  await call("service account with a wrong secret", (cb) =>
    mpWrongAccount.import("node unauthorised import", new Date(now - 10 * day), { distinct_id: "node-user-5" }, cb));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
