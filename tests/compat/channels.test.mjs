// Channels with the official SDKs: public, private, presence, encrypted; client events;
// triggers, batches, exclusion and channel queries through the server SDK.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, serverSdk, client, connected, subscribed, once, collect, sleep,
} from './harness.mjs';

let server;
let sdk;
const clients = [];
const open = (opts) => { const c = client(server, opts); clients.push(c); return c; };

before(async () => { server = await startServer(); sdk = serverSdk(server); });
after(async () => { clients.forEach((c) => c.disconnect()); await server.stop(); });

test('pusher-js connects and gets a socket id of the SDK format', async () => {
  const socketId = await connected(open());
  assert.match(socketId, /^\d+\.\d+$/);
});

test('public channel receives an event triggered with the server SDK', async () => {
  const c = open();
  const channel = await subscribed(c, 'compat-public');
  const got = once((h) => channel.bind('greeting', h));
  await sdk.trigger('compat-public', 'greeting', { text: 'hello' });
  const [data] = await got;
  assert.deepEqual(data, { text: 'hello' });
});

test('private channel authorized by the server SDK; a wrong secret is refused', async () => {
  const c = open();
  const channel = await subscribed(c, 'private-compat');
  const got = once((h) => channel.bind('secret-news', h));
  await sdk.trigger('private-compat', 'secret-news', 'for members');
  assert.equal((await got)[0], 'for members');

  const forger = open({ sdk: serverSdk(server, { secret: 'not-the-secret' }) });
  const refused = forger.subscribe('private-forged');
  const [err] = await once((h) => refused.bind('pusher:subscription_error', h), 5000, 'subscription_error');
  assert.equal(err.type, 'AuthError');
  assert.equal(err.status, 401);
  // The refused client is still connected and can use other channels.
  await subscribed(forger, 'compat-after-refusal');
  assert.equal(forger.connection.state, 'connected');
});

test('presence: members, member_added once per user, member_removed, users query', async () => {
  const alice = open({ user: { user_id: 'alice', user_info: { name: 'Alice' } } });
  const room = await subscribed(alice, 'presence-compat');
  assert.equal(room.members.count, 1);
  assert.deepEqual(room.members.me, { id: 'alice', info: { name: 'Alice' } });

  const added = collect(room, 'pusher:member_added');
  const bob1 = open({ user: { user_id: 'bob', user_info: { name: 'Bob' } } });
  const bobRoom = await subscribed(bob1, 'presence-compat');
  assert.equal(bobRoom.members.count, 2);
  assert.equal(bobRoom.members.get('alice').info.name, 'Alice');
  const bob2 = open({ user: { user_id: 'bob', user_info: { name: 'Bob' } } });
  await subscribed(bob2, 'presence-compat');
  await sleep(300);
  assert.equal(added.length, 1, 'a user with two sockets is added once');
  assert.equal(added[0].data.id, 'bob');
  assert.equal(room.members.count, 2);

  const res = await sdk.get({ path: '/channels/presence-compat/users' });
  const { users } = await res.json();
  assert.deepEqual(users.map((u) => u.id).sort(), ['alice', 'bob']);
  const info = await (await sdk.get({ path: '/channels/presence-compat', params: { info: 'user_count,subscription_count' } })).json();
  assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });

  const removed = collect(room, 'pusher:member_removed');
  bob1.disconnect();
  await sleep(300);
  assert.equal(removed.length, 0, 'bob still has a socket');
  bob2.disconnect();
  await once((h) => room.bind('pusher:member_removed', h), 5000, 'member_removed');
  assert.equal(removed.length, 1);
  assert.equal(room.members.count, 1);
});

test('encrypted channel: the SDK encrypts, the server passes through, pusher-js decrypts', async () => {
  const c = open();
  const channel = await subscribed(c, 'private-encrypted-compat');
  const got = once((h) => channel.bind('sealed', h));
  await sdk.trigger('private-encrypted-compat', 'sealed', { secret: 42 });
  const [data] = await got;
  assert.deepEqual(data, { secret: 42 });
  // pusher-js itself refuses client events on encrypted channels (the server refuses them too:
  // see server/tests/protocol.rs).
  assert.throws(() => channel.trigger('client-x', {}), /not currently supported/);
});

test('client events reach other subscribers, not the sender, with user_id on presence', async () => {
  const ann = open({ user: { user_id: 'ann', user_info: {} } });
  const ben = open({ user: { user_id: 'ben', user_info: {} } });
  const annChat = await subscribed(ann, 'private-compat-chat');
  const benChat = await subscribed(ben, 'private-compat-chat');
  const echoed = collect(annChat, 'client-typing');
  const got = once((h) => benChat.bind('client-typing', h));
  assert.equal(annChat.trigger('client-typing', { who: 'ann' }), true);
  assert.deepEqual((await got)[0], { who: 'ann' });
  await sleep(200);
  assert.equal(echoed.length, 0, 'never echoed to the sender');

  const annRoom = await subscribed(ann, 'presence-compat-chat');
  const benRoom = await subscribed(ben, 'presence-compat-chat');
  const fromAnn = once((h) => benRoom.bind('client-wave', h));
  annRoom.trigger('client-wave', { hi: true });
  const [data, meta] = await fromAnn;
  assert.deepEqual(data, { hi: true });
  assert.equal(meta.user_id, 'ann');
});

test('triggerBatch, socket_id exclusion and trigger info', async () => {
  const a = open();
  const b = open();
  const aId = await connected(a);
  const aCh = await subscribed(a, 'compat-batch');
  const bCh = await subscribed(b, 'compat-batch');
  const bothGot = Promise.all([
    once((h) => aCh.bind('b1', h)), once((h) => bCh.bind('b2', h)),
  ]);
  await sdk.triggerBatch([
    { channel: 'compat-batch', name: 'b1', data: { n: 1 } },
    { channel: 'compat-batch', name: 'b2', data: { n: 2 } },
  ]);
  const [[d1], [d2]] = await bothGot;
  assert.deepEqual([d1, d2], [{ n: 1 }, { n: 2 }]);

  const aSeen = collect(aCh, 'excluded');
  const bGot = once((h) => bCh.bind('excluded', h));
  const res = await sdk.trigger('compat-batch', 'excluded', 'x', { socket_id: aId, info: 'subscription_count' });
  assert.deepEqual(await res.json(), { channels: { 'compat-batch': { subscription_count: 2 } } });
  await bGot;
  await sleep(200);
  assert.equal(aSeen.length, 0, 'the excluded socket gets nothing');
});

test('channel listing with prefix filter and user_count', async () => {
  const c = open({ user: { user_id: 'lister', user_info: {} } });
  await subscribed(c, 'presence-compat-list');
  await subscribed(c, 'compat-list-public');
  const all = await (await sdk.get({ path: '/channels' })).json();
  assert.ok('compat-list-public' in all.channels);
  const presence = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-compat-list', info: 'user_count' } })).json();
  assert.deepEqual(presence, { channels: { 'presence-compat-list': { user_count: 1 } } });
});

test('requests signed with a wrong secret or key are refused with 401', async () => {
  for (const bad of [{ secret: 'wrong' }, { key: 'wrong-key' }]) {
    const wrong = serverSdk(server, bad);
    await assert.rejects(wrong.trigger('compat-public', 'e', 'd'), (e) => e.status === 401);
  }
  const otherApp = serverSdk(server, { appId: '999' });
  await assert.rejects(otherApp.trigger('compat-public', 'e', 'd'), (e) => e.status === 404);
  await assert.rejects(sdk.trigger('compat-public', 'e', 'x'.repeat(10 * 1024 + 1)), (e) => e.status === 413);
});

test('an unknown key is refused with 4001 and pusher-js does not reconnect', async () => {
  const c = open({ key: 'no-such-key' });
  const codes = [];
  c.connection.bind('error', (e) => codes.push(e?.error?.data?.code ?? e?.data?.code));
  await once((h) => c.connection.bind('disconnected', h), 5000, 'disconnected');
  assert.ok(codes.includes(4001), `error codes seen: ${codes}`);
  await sleep(1500);
  assert.equal(c.connection.state, 'disconnected', 'refused: no reconnect');
});
