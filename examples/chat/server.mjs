// The chat example's backend: serves the page and pusher-js, authorizes private and presence
// channels with the official server SDK, and publishes messages through Herald's HTTP API.
//
//   PUSHER_APP_ID=1 PUSHER_KEY=herald-dev-key PUSHER_SECRET=herald-dev-secret \
//   PUSHER_HOST=127.0.0.1 PUSHER_PORT=6001 node server.mjs     # then open http://127.0.0.1:3000
//
// Identity is whatever name the page sends: fine for a demo, replace it with your session.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import Pusher from 'pusher';

const env = (name, fallback) => process.env[name] ?? fallback;
const herald = {
  appId: env('PUSHER_APP_ID', '1'),
  key: env('PUSHER_KEY', 'herald-dev-key'),
  secret: env('PUSHER_SECRET', 'herald-dev-secret'),
  host: env('PUSHER_HOST', '127.0.0.1'),
  port: env('PUSHER_PORT', '6001'),
};
// Where browsers reach Herald (may differ from where this backend does, e.g. behind an Ingress).
const browserHost = env('PUSHER_BROWSER_HOST', herald.host);
const browserPort = Number(env('PUSHER_BROWSER_PORT', herald.port));

const pusher = new Pusher({ ...herald, useTLS: env('PUSHER_TLS', 'false') === 'true' });
const pusherJs = createRequire(import.meta.url).resolve('pusher-js/dist/web/pusher.min.js');
let messages = 0;

const cleanName = (name) => String(name ?? '').trim().replace(/[^\p{L}\p{N} _.-]/gu, '').slice(0, 32);

async function body(req) {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 10_000) throw new Error('body too large');
  }
  return text;
}

function send(res, status, type, payload) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(payload);
}

const routes = {
  'GET /': async (req, res) => send(res, 200, 'text/html; charset=utf-8', await readFile(new URL('index.html', import.meta.url))),
  'GET /pusher.js': async (req, res) => send(res, 200, 'text/javascript', await readFile(pusherJs)),
  'GET /config.js': async (req, res) => send(res, 200, 'text/javascript',
    `window.HERALD = ${JSON.stringify({ key: herald.key, wsHost: browserHost, wsPort: browserPort })};`),
  // pusher-js posts socket_id and channel_name (form-encoded), plus our `user` param.
  'POST /pusher/auth': async (req, res) => {
    const form = new URLSearchParams(await body(req));
    const user = cleanName(form.get('user'));
    const channel = form.get('channel_name') ?? '';
    if (!user) return send(res, 403, 'application/json', JSON.stringify({ error: 'pick a name first' }));
    if (channel === 'presence-room') {
      const auth = pusher.authorizeChannel(form.get('socket_id'), channel, { user_id: user, user_info: { name: user } });
      return send(res, 200, 'application/json', JSON.stringify(auth));
    }
    if (channel === 'private-room') {
      return send(res, 200, 'application/json', JSON.stringify(pusher.authorizeChannel(form.get('socket_id'), channel)));
    }
    return send(res, 403, 'application/json', JSON.stringify({ error: `no access to ${channel}` }));
  },
  // Messages go through the backend (never trust a client event for content), to the private
  // channel; the public lobby gets the running count.
  'POST /messages': async (req, res) => {
    const { user, text } = JSON.parse(await body(req));
    const name = cleanName(user);
    const message = String(text ?? '').slice(0, 500);
    if (!name || !message) return send(res, 400, 'application/json', JSON.stringify({ error: 'user and text are required' }));
    messages += 1;
    await pusher.trigger('private-room', 'message', { user: name, text: message, at: Date.now() });
    await pusher.trigger('lobby', 'count', { messages });
    return send(res, 204, 'text/plain', '');
  },
};

const server = createServer(async (req, res) => {
  const route = routes[`${req.method} ${new URL(req.url, 'http://x').pathname}`];
  if (!route) return send(res, 404, 'text/plain', 'not found');
  try {
    await route(req, res);
  } catch (e) {
    send(res, 500, 'application/json', JSON.stringify({ error: String(e.message ?? e) }));
  }
});
server.listen(Number(env('PORT', '3000')), env('BIND', '127.0.0.1'), () => {
  const { address, port } = server.address();
  console.log(`chat example on http://${address}:${port} (Herald at ${herald.host}:${herald.port}, app ${herald.appId})`);
});
