// The binary as a user meets it: the embedded default and its banner, graceful shutdown with
// 4200, and bad configuration reported in full.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startServer, client, connected, subscribed, once, PusherServer,
} from './harness.mjs';

test('the embedded default prints a dev app that pusher-js and the server SDK can use as printed', async () => {
  const server = await startServer([]);
  try {
    const banner = server.banner();
    const key = banner.match(/key\s+= (\S+)/)[1];
    const secret = banner.match(/secret = (\S+)/)[1];
    const appId = banner.match(/app_id = (\S+)/)[1];
    assert.match(banner, /new Pusher\("[^"]+", \{ cluster: "herald", wsHost: "127\.0\.0\.1", wsPort: \d+/);
    const sdk = new PusherServer({ appId, key, secret, host: '127.0.0.1', port: String(server.port), useTLS: false });
    const c = client(server, { key, sdk });
    const channel = await subscribed(c, 'private-dev');
    const got = once((h) => channel.bind('hello', h));
    await sdk.trigger('private-dev', 'hello', { from: 'backend' });
    assert.deepEqual((await got)[0], { from: 'backend' });
    c.disconnect();
  } finally {
    await server.stop();
  }
});

test('SIGTERM closes sockets with 4200, pusher-js starts reconnecting, the process exits 0', async () => {
  const server = await startServer();
  const c = client(server);
  await connected(c);
  const closed = once((h) => c.connection.bind('state_change', (s) => { if (s.current !== 'connected') h(s); }), 5000, 'state change');
  server.child.kill('SIGTERM');
  const [change] = await closed;
  // 4200 means "reconnect at once": pusher-js goes straight to connecting, not failed.
  assert.ok(['connecting', 'unavailable'].includes(change.current), `state ${change.current}`);
  const { code } = await server.exited;
  assert.equal(code, 0);
  c.disconnect();
});

test('bad configuration lists every problem and exits non-zero', () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-'));
  const file = join(dir, 'herald.toml');
  writeFileSync(file, 'portt = 1\n[[apps]]\nid = "1"\nkey = "k"\n');
  const r = spawnSync(process.env.HERALD_BIN, ['--config', file, '--port', 'eighty', '--app-id', '7'], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  for (const needle of ['portt: unknown key', 'apps[0].secret: required', '--port (port): "eighty"', 'also needs --app-key, --app-secret']) {
    assert.ok(r.stderr.includes(needle), `missing ${needle} in:\n${r.stderr}`);
  }
});

test('--dev-auth: pusher-js joins presence and signs in through the endpoints alone', async () => {
  const { Pusher: PusherClient } = await import('./harness.mjs');
  const server = await startServer(['--dev-auth']);
  try {
    const banner = server.banner();
    assert.match(banner, /\/pusher\/auth/);
    const key = banner.match(/key\s+= (\S+)/)[1];
    const base = `http://127.0.0.1:${server.port}`;
    const c = new PusherClient(key, {
      cluster: 'herald', wsHost: '127.0.0.1', wsPort: server.port, forceTLS: false, enabledTransports: ['ws'],
      channelAuthorization: { endpoint: `${base}/pusher/auth`, params: { user_id: 'frontend-dev' } },
      userAuthentication: { endpoint: `${base}/pusher/user-auth`, params: { user_id: 'frontend-dev' } },
    });
    const room = await subscribed(c, 'presence-dev-room');
    assert.equal(room.members.me.id, 'frontend-dev');
    const signedIn = once((h) => c.connection.bind('message', (m) => { if (m.event === 'pusher:signin_success') h(m); }), 5000, 'signin');
    c.signin();
    await signedIn;
    c.disconnect();
  } finally {
    await server.stop();
  }
});
