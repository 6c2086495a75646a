// Three herald-server processes on one Redis, used through the official SDKs exactly as one
// server would be: clients on different nodes, triggers through another, a node killed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, appArgs, serverSdk, client, subscribed, once, sleep, startRedis, eventually, connected,
} from './harness.mjs';

/** Runs `body` against three nodes on one fresh Redis, then stops them and the clients it opened. */
async function onThreeNodes(extraArgs, body) {
  const redis = await startRedis();
  const nodes = [];
  const clients = [];
  try {
    for (const id of ['n1', 'n2', 'n3']) {
      nodes.push(await startServer([...appArgs(), '--cluster', 'redis', '--redis-url', redis.url, '--node-id', id, ...extraArgs]));
    }
    await body(nodes, clients);
  } finally {
    clients.forEach((c) => c.disconnect());
    await Promise.all(nodes.map((n) => n.stop()));
    redis.stop();
  }
}

test('three nodes on one Redis behave as one server to the SDKs', () => onThreeNodes(['--lease-ttl', '3'], async (nodes, clients) => {
    const [n1, n2, n3] = nodes;
    const open = (node, user) => { const c = client(node, { user }); clients.push(c); return c; };
    const alice = open(n1, { user_id: 'alice', user_info: { name: 'Alice' } });
    const bob = open(n2, { user_id: 'bob', user_info: { name: 'Bob' } });
    const aliceRoom = await subscribed(alice, 'presence-cluster');
    const bobRoom = await subscribed(bob, 'presence-cluster');
    assert.equal(bobRoom.members.count, 2, 'bob on node 2 sees alice on node 1');
    assert.equal(bobRoom.members.get('alice').info.name, 'Alice');
    await eventually(() => aliceRoom.members.count === 2, 5000, 'alice sees bob');

    // The backend talks to node 3 only.
    const sdk = serverSdk(n3);
    const got = Promise.all([once((h) => aliceRoom.bind('news', h)), once((h) => bobRoom.bind('news', h))]);
    await sdk.trigger('presence-cluster', 'news', { n: 1 });
    const [[a], [b]] = await got;
    assert.deepEqual([a, b], [{ n: 1 }, { n: 1 }]);
    const info = await (await sdk.get({ path: '/channels/presence-cluster', params: { info: 'user_count,subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 2 });

    // Client events cross nodes.
    const typing = once((h) => bobRoom.bind('client-typing', h));
    aliceRoom.trigger('client-typing', { on: true });
    const [data, meta] = await typing;
    assert.deepEqual(data, { on: true });
    assert.equal(meta.user_id, 'alice');

    // Node 1 crashes: bob is told alice left, within the lease bound.
    const removed = once((h) => bobRoom.bind('pusher:member_removed', h), 12000, 'member_removed after kill -9');
    n1.child.kill('SIGKILL');
    const [member] = await removed;
    assert.equal(member.id, 'alice');
    const after = await (await sdk.get({ path: '/channels/presence-cluster', params: { info: 'user_count' } })).json();
    assert.equal(after.user_count, 1);
    await sleep(100);
}));

test('a presence join storm over three nodes fires pusher:member_added once per member in every client', () => onThreeNodes(['--app-max-presence-members', '1000'], async (nodes, clients) => {
    const total = 60;
    for (let i = 0; i < total; i += 1) {
      clients.push(client(nodes[i % 3], { user: { user_id: `u${i}`, user_info: {} } }));
    }
    await Promise.all(clients.map((c) => connected(c)));
    // Every client subscribes at once; each keeps the members pusher-js told it of.
    const views = clients.map((c, i) => {
      const view = { user: `u${i}`, known: new Set(), repeated: [] };
      const channel = c.subscribe('presence-storm');
      channel.bind('pusher:subscription_succeeded', (members) => members.each((m) => view.known.add(m.id)));
      channel.bind('pusher:member_added', (m) => {
        if (view.known.has(m.id)) view.repeated.push(m.id);
        view.known.add(m.id);
      });
      return view;
    });
    await eventually(() => views.every((v) => v.known.size === total), 15000, 'every client knowing all members');
    await sleep(300); // a late repeat would show here
    const repeats = views.flatMap((v) => v.repeated.map((id) => `${v.user} was told of ${id} again`));
    assert.deepEqual(repeats, []);
}));
