// Used by the Kubernetes end-to-end test (tests/e2e/tests/servers.rs): the official pusher-js
// client on one herald-server pod, the official server SDK triggering on another, credentials
// as a user reads them from the PusherApp's Secret. Prints one JSON line and exits 0 on success.
//
//   node k8s-roundtrip.mjs '{"appId":"..","key":"..","secret":"..","clientPort":1,"apiPort":2}'
// (`"host"` defaults to 127.0.0.1; the node tests pass a Service address.)
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const cfg = JSON.parse(process.argv[2]);
const host = cfg.host ?? '127.0.0.1';
const sdk = new PusherServer({
  appId: cfg.appId, key: cfg.key, secret: cfg.secret, host, port: String(cfg.apiPort), useTLS: false,
});
Pusher.logToConsole = false;
const client = new Pusher(cfg.key, {
  cluster: 'herald', wsHost: host, wsPort: cfg.clientPort, forceTLS: false,
  enabledTransports: ['ws'], disableStats: true,
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, callback) => {
      try {
        const auth = channelName.startsWith('presence-')
          ? sdk.authorizeChannel(socketId, channelName, { user_id: 'ada', user_info: { name: 'Ada' } })
          : sdk.authorizeChannel(socketId, channelName);
        callback(null, auth);
      } catch (e) { callback(e, null); }
    },
  },
});

const timeout = setTimeout(() => { console.error('timed out'); process.exit(1); }, cfg.timeoutMs ?? 15000);
// Refused (4000-4099, e.g. an app key the servers do not know yet): no point waiting.
client.connection.bind('error', (e) => {
  const code = e?.data?.code ?? e?.error?.data?.code;
  if (code >= 4000 && code < 4100) { console.error(`refused: ${code}`); process.exit(1); }
});
const waitFor = (channel, event) => new Promise((resolve) => channel.bind(event, resolve));
const subscribe = async (name) => {
  const channel = client.subscribe(name);
  await waitFor(channel, 'pusher:subscription_succeeded');
  return channel;
};

try {
  const [pub, priv, presence] = await Promise.all([subscribe('orders'), subscribe('private-orders'), subscribe('presence-room')]);
  const got = Promise.all([waitFor(pub, 'created'), waitFor(priv, 'created')]);
  await sdk.trigger(['orders', 'private-orders'], 'created', { id: 7 });
  const [a, b] = await got;
  const members = await sdk.get({ path: '/channels/presence-room/users' }).then((r) => r.json());
  console.log(JSON.stringify({ ok: true, public: a, private: b, members: members.users, me: presence.members.me.id }));
  clearTimeout(timeout);
  client.disconnect();
  process.exit(0);
} catch (e) {
  console.error(String(e?.stack ?? e));
  process.exit(1);
}
