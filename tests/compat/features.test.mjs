// Cache channels, subscription counts, webhooks verified with the server SDK's webhook()
// helper, and quotas — all with the official SDKs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  APP, startServer, appArgs, serverSdk, client, connected, subscribed, once, sleep,
  webhookReceiver, eventually,
} from './harness.mjs';

async function withServer(args, fn) {
  const server = await startServer(args);
  const clients = [];
  const open = (opts) => { const c = client(server, opts); clients.push(c); return c; };
  try {
    await fn(server, serverSdk(server), open);
  } finally {
    clients.forEach((c) => c.disconnect());
    await server.stop();
  }
}

/** Every event of every valid webhook; asserts each one passes the SDK's verification. */
function verifiedEvents(sdk, receiver) {
  // A retried request arrives more than once; count its events once.
  const unique = [...new Map(receiver.received.map((r) => [r.rawBody, r])).values()];
  return unique.flatMap((r) => {
    const hook = sdk.webhook({ headers: r.headers, rawBody: r.rawBody });
    assert.ok(hook.isValid(), 'webhook signature verifies with the server SDK');
    return hook.getEvents();
  });
}

test('cache channels: a miss for the first subscriber, the last event for later ones', () => withServer(appArgs(), async (server, sdk, open) => {
  const first = open();
  const channel = first.subscribe('cache-scores');
  await once((h) => channel.bind('pusher:cache_miss', h), 5000, 'cache_miss');
  await sdk.trigger('cache-scores', 'score', { home: 1, away: 0 });
  await sdk.trigger('cache-scores', 'score', { home: 2, away: 0 });
  const late = open();
  const lateChannel = late.subscribe('cache-scores');
  const [data] = await once((h) => lateChannel.bind('score', h), 5000, 'cached event');
  assert.deepEqual(data, { home: 2, away: 0 });
}));

test('subscription_count events follow subscribes and unsubscribes', () => withServer([...appArgs(), '--app-subscription-count'], async (server, sdk, open) => {
  const a = open();
  const counts = [];
  const ch = a.subscribe('counted');
  ch.bind('pusher:subscription_count', (d) => counts.push(d.subscription_count));
  await eventually(() => counts.includes(1), 5000, 'count 1');
  const b = open();
  await subscribed(b, 'counted');
  await eventually(() => counts.includes(2), 5000, 'count 2');
  b.unsubscribe('counted');
  await eventually(() => counts.at(-1) === 1 && counts.length >= 3, 5000, 'back to 1');
}));

test('webhooks verify with the SDK; vacated waits 3 s; failed deliveries are retried', async () => {
  const receiver = await webhookReceiver([500]);
  try {
    await withServer([...appArgs(), '--app-webhook-url', receiver.url], async (server, sdk, open) => {
      const c = open({ user: { user_id: 'hook-user', user_info: {} } });
      await subscribed(c, 'presence-hooks');
      const events = await eventually(() => {
        const e = verifiedEvents(sdk, receiver);
        return e.length >= 2 && e;
      }, 8000, 'occupied + member_added');
      assert.deepEqual(events.map((e) => e.name).sort(), ['channel_occupied', 'member_added']);
      // The first request was answered 500; the same body came again.
      await eventually(() => receiver.received.length >= 3, 5000, 'the retry');
      const bodies = receiver.received.map((r) => r.rawBody);
      assert.equal(bodies.filter((b) => b === bodies[0]).length, 2, 'the failed request is retried once');
      const left = Date.now();
      c.disconnect();
      await eventually(() => verifiedEvents(sdk, receiver).some((e) => e.name === 'channel_vacated'), 8000, 'vacated');
      const vacatedAt = receiver.received.at(-1).at;
      assert.ok(vacatedAt - left >= 2900, `vacated after ${vacatedAt - left} ms`);
      const removed = verifiedEvents(sdk, receiver).find((e) => e.name === 'member_removed');
      assert.deepEqual(removed, { name: 'member_removed', channel: 'presence-hooks', user_id: 'hook-user' });
    });
  } finally {
    await receiver.close();
  }
});

test('webhook targets from a config file: filters by event type and channel, batching', async () => {
  const everything = await webhookReceiver();
  const orders = await webhookReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'herald-'));
  const file = join(dir, 'herald.toml');
  writeFileSync(file, `
[[apps]]
id = "${APP.id}"
key = "${APP.key}"
secret = "${APP.secret}"
client_events = true
webhook_batch_ms = 300

[[apps.webhooks]]
url = "${everything.url}"

[[apps.webhooks]]
url = "${orders.url}"
event_types = ["channel_occupied"]
channel_prefix = "private-"
channel_suffix = "-orders"
`);
  try {
    await withServer(['--config', file], async (server, sdk, open) => {
      const c = open();
      await Promise.all(['private-eu-orders', 'private-eu-users', 'public-orders'].map((n) => subscribed(c, n)));
      await eventually(() => verifiedEvents(sdk, everything).length === 3, 5000, 'three occupied');
      assert.equal(everything.received.length, 1, 'batched into one request');
      await sleep(300);
      assert.deepEqual(verifiedEvents(sdk, orders), [{ name: 'channel_occupied', channel: 'private-eu-orders' }]);
    });
  } finally {
    await everything.close();
    await orders.close();
  }
});

test('quotas: backend events per second answer 429, connections over quota get 4004', () => withServer(
  [...appArgs(), '--app-max-backend-events-per-second', '2', '--app-max-connections', '1'],
  async (server, sdk, open) => {
    await sdk.trigger('q', 'e', '1');
    await sdk.trigger('q', 'e', '2');
    await assert.rejects(sdk.trigger('q', 'e', '3'), (e) => e.status === 429);
    const first = open();
    await connected(first);
    const second = open();
    const codes = [];
    second.connection.bind('error', (e) => codes.push(e?.error?.data?.code ?? e?.data?.code));
    await once((h) => second.connection.bind('disconnected', h), 5000, 'refused');
    assert.ok(codes.includes(4004), `codes ${codes}`);
    assert.equal(first.connection.state, 'connected');
  },
));

test('the Node backend example triggers through the official SDK', async () => {
  const { spawnSync } = await import('node:child_process');
  const { copyFileSync, mkdirSync } = await import('node:fs');
  const { fileURLToPath } = await import('node:url');
  // As a user would: the snippet in a project that has `npm i pusher` (this suite's modules).
  const dir = fileURLToPath(new URL('./.artifacts/backend-example/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  copyFileSync(fileURLToPath(new URL('../../examples/backend/trigger.mjs', import.meta.url)), join(dir, 'trigger.mjs'));
  const server = await startServer();
  try {
    const result = spawnSync(process.execPath, [join(dir, 'trigger.mjs')], {
      env: { ...process.env, PUSHER_APP_ID: APP.id, PUSHER_KEY: APP.key, PUSHER_SECRET: APP.secret, PUSHER_PORT: String(server.port) },
      encoding: 'utf8',
      timeout: 20000,
    });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /occupied channels: \{"channels":\{\}\}/);
  } finally {
    await server.stop();
  }
});
