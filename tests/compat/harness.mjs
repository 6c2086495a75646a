// Harness for the compat suite: starts the built herald-server binary on free ports and builds
// official pusher-js clients and pusher server SDK instances pointed at it.
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

Pusher.logToConsole = false;

export const APP = { id: '4242', key: 'compat-key', secret: 'compat-secret' };
// 32 bytes, base64: the encryption master key the server SDK derives channel secrets from.
export const MASTER_KEY = Buffer.from('0123456789abcdef0123456789abcdef').toString('base64');

const BIN = process.env.HERALD_BIN;
if (!BIN) throw new Error('HERALD_BIN must point at the built herald-server binary');

/** Starts herald-server; resolves once the banner shows the addresses it listens on. */
export async function startServer(args = appArgs()) {
  const child = spawn(BIN, ['--bind', '127.0.0.1', '--port', '0', '--metrics-port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HERALD_LOG: 'warn' },
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ports = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner; stderr: ${stderr}`)), 10000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const ws = stdout.match(/wss?:\/\/127\.0\.0\.1:(\d+)/);
      const ops = stdout.match(/http:\/\/127\.0\.0\.1:(\d+)\/healthz/);
      if (ws && ops) {
        clearTimeout(timer);
        resolve({ port: Number(ws[1]), opsPort: Number(ops[1]) });
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`exited ${code}: ${stderr}`)); });
  });
  return {
    ...ports,
    child,
    exited,
    banner: () => stdout,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

export function appArgs(app = APP) {
  return ['--app-id', app.id, '--app-key', app.key, '--app-secret', app.secret, '--app-client-events'];
}

/** The official server SDK, pointed at the server. */
export function serverSdk(server, overrides = {}) {
  return new PusherServer({
    appId: APP.id, key: APP.key, secret: APP.secret,
    host: '127.0.0.1', port: String(server.port), useTLS: false,
    encryptionMasterKeyBase64: MASTER_KEY,
    ...overrides,
  });
}

/**
 * An official pusher-js client. Channel authorization goes through the server SDK, as a
 * backend's auth endpoint would; `user` is the presence identity this client signs as.
 */
export function client(server, { user, signinAs, sdk = serverSdk(server), key = APP.key } = {}) {
  const pusher = new Pusher(key, {
    cluster: 'herald',
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        try {
          callback(null, sdk.authenticateUser(socketId, signinAs));
        } catch (e) {
          callback(e, null);
        }
      },
    },
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          const auth = channelName.startsWith('presence-')
            ? sdk.authorizeChannel(socketId, channelName, user)
            : sdk.authorizeChannel(socketId, channelName);
          callback(null, auth);
        } catch (e) {
          callback(e, null);
        }
      },
    },
  });
  return pusher;
}

/** Resolves with the first call of `bind(handler)`, or rejects after `ms`. */
export function once(bind, ms = 5000, what = 'event') {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    bind((...args) => { clearTimeout(timer); resolve(args); });
  });
}

export async function connected(pusher) {
  if (pusher.connection.state !== 'connected') {
    await once((h) => pusher.connection.bind('connected', h), 5000, 'connected');
  }
  return pusher.connection.socket_id;
}

export async function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  await once((h) => channel.bind('pusher:subscription_succeeded', h), 5000, `subscription to ${name}`);
  return channel;
}

/** Collects every event `name` on `channel`, for "did not arrive" checks. */
export function collect(channel, name) {
  const seen = [];
  channel.bind(name, (data, meta) => seen.push({ data, meta }));
  return seen;
}

export { sleep, Pusher, PusherServer };

/** Resolves with the first connection message matching `pred`. */
export function message(pusher, pred, ms = 5000, what = 'message') {
  return once((h) => pusher.connection.bind('message', (m) => { if (pred(m)) h(m); }), ms, what);
}

/** Signs in with pusher-js and waits until its #server-to-user channel is joined. */
export async function signedIn(pusher) {
  await connected(pusher);
  const joined = message(pusher, (m) => m.event === 'pusher_internal:subscription_succeeded'
    && String(m.channel).startsWith('#server-to-user-'), 5000, 'server-to-user subscription');
  pusher.signin();
  await joined;
}

/** A webhook receiver on 127.0.0.1 answering with `statuses` in order, then 200. */
export async function webhookReceiver(statuses = []) {
  const { createServer } = await import('node:http');
  const received = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      received.push({ headers: req.headers, rawBody: body, at: Date.now() });
      res.statusCode = statuses.length ? statuses.shift() : 200;
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/hooks`,
    received,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Polls `fn` until it returns a truthy value. */
export async function eventually(fn, ms = 8000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A throwaway redis-server on a free port (killed by `stop`). */
export async function startRedis() {
  const { createServer } = await import('node:net');
  const port = await new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const { connect } = await import('node:net');
  await eventually(() => child.exitCode === null && port, 2000, 'redis-server');
  for (let i = 0; i < 50; i += 1) {
    const ok = await new Promise((resolve) => {
      const c = connect(port, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (ok) break;
    await sleep(100);
  }
  return { url: `redis://127.0.0.1:${port}/0`, stop: () => child.kill('SIGKILL') };
}
