// Idle memory measured with the official client instead of herald-bench: N pusher-js clients,
// each subscribed to one of 100 public channels, held open; the server's RSS before and after
// (from /proc), in bytes per subscribed connection. Any Pusher-compatible server.
//
//   node bench/idle-pusher-js.mjs --port 7300 --pid PID [--connections 5000] [--key herald-dev-key]
//
// pusher-js comes from tests/compat (scripts/test installs it there).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(fileURLToPath(new URL("../tests/compat/package.json", import.meta.url)));
const Pusher = require("pusher-js");
const version = JSON.parse(
  readFileSync(new URL("../tests/compat/node_modules/pusher-js/package.json", import.meta.url), "utf8"),
).version;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const port = Number(args.port ?? 7300);
const pid = Number(args.pid);
const n = Number(args.connections ?? 5000);
const key = args.key ?? "herald-dev-key";
if (!pid) throw new Error("--pid PID of the server is needed");

const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const before = rss();
const clients = [];
let subscribed = 0;
let errors = 0;
const started = Date.now();
// 100 handshakes in flight at a time, as herald-bench does.
for (let first = 0; first < n; first += 100) {
  const batch = [];
  for (let i = first; i < Math.min(n, first + 100); i++) {
    const client = new Pusher(key, {
      wsHost: "127.0.0.1",
      wsPort: port,
      forceTLS: false,
      enabledTransports: ["ws"],
      cluster: "mt1",
      disableStats: true,
    });
    clients.push(client);
    batch.push(
      new Promise((resolve) => {
        const channel = client.subscribe(`idle-${i % 100}`);
        channel.bind("pusher:subscription_succeeded", () => {
          subscribed++;
          resolve();
        });
        channel.bind("pusher:subscription_error", () => {
          errors++;
          resolve();
        });
        setTimeout(resolve, 20000);
      }),
    );
  }
  await Promise.all(batch);
}
const seconds = (Date.now() - started) / 1000;
await sleep(2000);
const after = rss();
const report = {
  client: `pusher-js ${version}`,
  connections: subscribed,
  errors: errors + (n - subscribed - errors),
  seconds,
  server_rss_before_bytes: before,
  server_rss_after_bytes: after,
  bytes_per_idle_connection: (after - before) / Math.max(1, subscribed),
};
console.log(JSON.stringify(report));
for (const c of clients) c.disconnect();
process.exit(0);
