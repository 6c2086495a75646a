// Clients of a Herald cluster on a real Kubernetes node (tests/e2e/tests/node.rs), run inside the
// node's network namespace against a Service: official pusher-js clients, the official server SDK.
//
//   node k8s-fleet.mjs '{"host":"10.96.0.20","port":6001,"appId":"1","key":"k","secret":"s",
//                        "clients":8,"seconds":30,"rate":10,"stayDown":false}'
//
// 1. Connects `clients` clients; each subscribes to `fleet`, `private-fleet` and `presence-fleet`
//    (as user u<i>). Checks, across whatever pods the Service chose: every client sees every
//    member, a client event from client 0 reaches every other client, a public and a private
//    event triggered through the SDK reach every client. Prints one JSON line {"ready":...}.
// 2. Triggers numbered events on `fleet` at `rate` per second for `seconds`, while the test
//    rolls, kills or reconfigures pods. pusher-js reconnects and resubscribes by itself; with
//    `stayDown`, a client whose connection drops stays down (to watch presence cleanup).
// 3. Prints one JSON line {"summary":...}: every close (client, code, time), reconnects, events
//    received per client, member_removed seen by the clients that never dropped, publish errors
//    (with the first few failures: event number, time, why).
// Times are Unix milliseconds.
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const cfg = JSON.parse(process.argv[2]);
const sdk = new PusherServer({
  appId: cfg.appId, key: cfg.key, secret: cfg.secret, host: cfg.host, port: String(cfg.port), useTLS: false,
});
Pusher.logToConsole = false;
const deadline = setTimeout(() => { console.error('fleet timed out'); process.exit(1); }, (cfg.seconds + 90) * 1000);

const clients = [];
const closes = [];
const reconnects = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what, check, ms = 20000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(50);
  }
};

for (let i = 0; i < cfg.clients; i++) {
  const user = `u${i}`;
  const c = {
    user, received: new Set(), clientEvents: 0, removed: new Map(), dropped: false, subscribed: 0, lastPublic: null,
  };
  c.pusher = new Pusher(cfg.key, {
    cluster: 'herald', wsHost: cfg.host, wsPort: cfg.port, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          callback(null, channelName.startsWith('presence-')
            ? sdk.authorizeChannel(socketId, channelName, { user_id: user, user_info: { n: i } })
            : sdk.authorizeChannel(socketId, channelName));
        } catch (e) { callback(e, null); }
      },
    },
  });
  let wasConnected = false;
  let lastClose = null;
  c.pusher.connection.bind('error', (e) => {
    const code = e?.data?.code ?? e?.error?.data?.code;
    // One close reaches this handler once per layer of pusher-js: count it once.
    if (code && !(lastClose && lastClose.code === code && Date.now() - lastClose.at < 100)) {
      lastClose = { client: i, code, at: Date.now() };
      closes.push(lastClose);
    }
  });
  const stayDown = () => setTimeout(() => c.pusher.disconnect(), 0);
  c.pusher.connection.bind('state_change', ({ current }) => {
    if (current === 'connected') {
      if (c.dropped && cfg.stayDown) return stayDown();
      if (wasConnected) reconnects.push({ client: i, at: Date.now() });
      wasConnected = true;
    } else if (wasConnected && !c.dropped) {
      c.dropped = true;
      c.droppedAt = Date.now();
      if (cfg.stayDown) stayDown();
    }
  });
  const pub = c.pusher.subscribe('fleet');
  const priv = c.pusher.subscribe('private-fleet');
  const presence = c.pusher.subscribe('presence-fleet');
  for (const ch of [pub, priv, presence]) ch.bind('pusher:subscription_succeeded', () => { c.subscribed += 1; });
  pub.bind('n', (d) => c.received.add(d.n));
  pub.bind('hello', (d) => { c.lastPublic = d; });
  priv.bind('hello', (d) => { c.lastPrivate = d; });
  priv.bind('client-ping', () => { c.clientEvents += 1; });
  presence.bind('pusher:member_removed', (m) => { if (!c.removed.has(m.id)) c.removed.set(m.id, Date.now()); });
  c.presence = presence;
  c.priv = priv;
  clients.push(c);
}

try {
  await until('every client subscribed', () => clients.every((c) => c.subscribed >= 3));
  await until('every client sees every member', () => clients.every((c) => c.presence.members.count === cfg.clients));
  await until('client 0 may trigger', () => clients[0].priv.trigger('client-ping', { from: 0 }));
  await until('the client event reached every other client', () => clients.slice(1).every((c) => c.clientEvents >= 1));
  await sdk.trigger(['fleet', 'private-fleet'], 'hello', { at: 1 });
  await until('the SDK events reached every client', () => clients.every((c) => c.lastPublic && c.lastPrivate));
  console.log(JSON.stringify({ ready: { clients: cfg.clients, socketIds: clients.map((c) => c.pusher.connection.socket_id) } }));

  const started = Date.now();
  let sent = 0;
  let publishErrors = 0;
  const publishFailures = [];
  if (cfg.rate > 0) {
    const every = 1000 / cfg.rate;
    while (Date.now() - started < cfg.seconds * 1000) {
      const n = sent++;
      const failed = (why) => { publishErrors += 1; if (publishFailures.length < 5) publishFailures.push({ n, at: Date.now(), why }); };
      sdk.trigger('fleet', 'n', { n }).then((r) => { if (r.status !== 200) failed(`status ${r.status}`); }, (e) => failed(String(e?.message ?? e)));
      await sleep(every);
    }
  } else {
    await sleep(cfg.seconds * 1000);
  }
  // Let reconnecting clients settle before counting.
  await sleep(3000);
  const summary = {
    started, sent, publishErrors, publishFailures, closes, reconnects,
    clients: clients.map((c) => ({
      user: c.user, state: c.pusher.connection.state, dropped: c.dropped, droppedAt: c.droppedAt ?? null,
      received: c.received.size, removed: Object.fromEntries(c.removed),
    })),
  };
  console.log(JSON.stringify({ summary }));
  clearTimeout(deadline);
  for (const c of clients) c.pusher.disconnect();
  process.exit(0);
} catch (e) {
  console.error(String(e?.stack ?? e));
  process.exit(1);
}
