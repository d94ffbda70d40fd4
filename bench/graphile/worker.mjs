// bench/graphile/worker.mjs: one graphile-worker process for the waiting
// rows of the benchmark (issue 18), spawned by bench/concurrent.lua as
//   node bench/graphile/worker.mjs MODE key=value ...
// with graphile-worker installed (npm) in the directory npm=DIR, and the
// database in the PG* environment variables (PGHOST, PGPORT, PGDATABASE,
// PGUSER; PGAPPNAME names its connections).
//
// Modes:
//   migrate  create or update graphile-worker's schema; prints
//            "RESULT version=V".
//   run      name=N count=K concurrency=C wait=timer|http [url=U] [seconds=S]
//            run() with `concurrency` C and a pool of C connections (its
//            documented advice: it warns when maxPoolSize < concurrency),
//            every other option at its default, until its task N has
//            ended K times (or S seconds); the jobs are already in its
//            queue.  The task waits 100 ms with setTimeout (timer) or GETs
//            U on a new connection (http: an agent of its own, no
//            keep-alive, as lua-http's request in bench/waiter.lua).
//            Prints "RESULT ran= dup= errors= t_first= t_last= rss_kb=
//            cpu_s= most=" as bench/waiter.lua does (times: Unix seconds).
// Errors go to stderr and exit non-zero.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import http from "node:http";

const mode = process.argv[2];
const opt = {};
for (const a of process.argv.slice(3)) {
  const m = /^([\w]+)=(.*)$/.exec(a);
  if (!m) {
    console.error(`graphile worker: bad argument: ${a}`);
    process.exit(2);
  }
  opt[m[1]] = m[2];
}

function result(r) {
  const parts = ["RESULT"];
  for (const k of Object.keys(r).sort()) {
    const v = r[k];
    parts.push(`${k}=${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(6) : v}`);
  }
  process.stdout.write(parts.join(" ") + "\n");
}

// graphile-worker is an ES module installed outside this directory: resolve
// it from there (ES imports do not look at NODE_PATH)
if (!opt.npm) throw new Error("graphile worker: npm= is required");
const npm = resolvePath(opt.npm);
const req = createRequire(npm + "/package.json");
// (its package.json is not among its exports: read it from its directory)
const version = JSON.parse(
  readFileSync(`${npm}/node_modules/graphile-worker/package.json`, "utf8"),
).version;
const gw = await import(pathToFileURL(req.resolve("graphile-worker")).href);

// quiet: its log lines are not what is measured
const logger = new gw.Logger(() => (level, message) => {
  if (level === "error") console.error(`graphile-worker: ${message}`);
});

function procStatus(field) {
  const m = new RegExp(`${field}:\\s*(\\d+)`).exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) : -1;
}

if (mode === "migrate") {
  await gw.runMigrations({ logger, maxPoolSize: 1 });
  result({ version });
} else if (mode === "run") {
  const name = opt.name;
  const count = Number(opt.count);
  const concurrency = Number(opt.concurrency);
  const seconds = Number(opt.seconds || 600);
  const url = opt.url;
  let wait;
  if (opt.wait === "timer") {
    wait = () => new Promise((resolve) => setTimeout(resolve, 100));
  } else if (opt.wait === "http") {
    if (!url) throw new Error("graphile worker: url= is required");
    wait = () =>
      new Promise((resolve, reject) => {
        const r = http.get(url, { agent: false }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c) => (body += c));
          res.on("end", () =>
            res.statusCode === 200 && body === "ok"
              ? resolve()
              : reject(new Error(`GET ${url}: status ${res.statusCode}`)),
          );
          res.on("error", reject);
        });
        r.setTimeout(30000, () => r.destroy(new Error(`GET ${url}: timeout`)));
        r.on("error", reject);
      });
  } else {
    throw new Error(`graphile worker: wait= must be timer or http`);
  }
  const now = () => (performance.timeOrigin + performance.now()) / 1000;
  const seen = new Set();
  let ran = 0, dup = 0, errors = 0, inflight = 0, most = 0;
  let tFirst = -1, tLast = -1;
  let runner;
  let stopping = false;
  const stop = () => {
    if (!stopping) {
      stopping = true;
      // not from inside the task: stop() waits for the tasks in flight
      setImmediate(() => runner.stop());
    }
  };
  runner = await gw.run({
    concurrency,
    maxPoolSize: concurrency,
    noHandleSignals: true,
    logger,
    taskList: {
      [name]: async (_payload, helpers) => {
        const t = now();
        if (tFirst < 0) tFirst = t;
        inflight++;
        if (inflight > most) most = inflight;
        try {
          await wait();
        } catch (e) {
          errors++;
          if (errors <= 5) console.error(`graphile worker: job ${helpers.job.id}: ${e.message}`);
          throw e;
        } finally {
          inflight--;
        }
        tLast = now();
        const id = String(helpers.job.id);
        if (seen.has(id)) dup++;
        seen.add(id);
        ran++;
        if (ran === count) stop();
      },
    },
  });
  const bound = setTimeout(() => {
    console.error(`graphile worker: ${ran} of ${count} jobs ended within ${seconds} s`);
    stop();
  }, seconds * 1000);
  await runner.promise;
  clearTimeout(bound);
  const u = process.cpuUsage();
  result({
    ran, dup, errors, most,
    t_first: tFirst, t_last: tLast,
    rss_kb: procStatus("VmHWM"),
    cpu_s: (u.user + u.system) / 1e6,
  });
  process.exit(0);
} else {
  console.error(`graphile worker: unknown mode ${mode}`);
  process.exit(2);
}
