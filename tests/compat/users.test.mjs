// User features with the official SDKs: pusher-js signin() with the server SDK's
// authenticateUser, sendToUser, terminateUserConnections, watchlists, authorized connections.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, appArgs, serverSdk, client, connected, signedIn, once, sleep,
} from './harness.mjs';

let server;
let sdk;
const clients = [];
const open = (opts) => { const c = client(server, opts); clients.push(c); return c; };

before(async () => {
  server = await startServer([...appArgs(), '--app-watchlist-events']);
  sdk = serverSdk(server);
});
after(async () => { clients.forEach((c) => c.disconnect()); await server.stop(); });

test('signin() then sendToUser reaches every socket of that user and nobody else', async () => {
  const a1 = open({ signinAs: { id: 'u-1', user_info: { name: 'One' } } });
  const a2 = open({ signinAs: { id: 'u-1' } });
  const other = open({ signinAs: { id: 'u-2' } });
  await Promise.all([signedIn(a1), signedIn(a2), signedIn(other)]);
  const got = Promise.all([
    once((h) => a1.user.bind('note', h)), once((h) => a2.user.bind('note', h)),
  ]);
  const stray = [];
  other.user.bind('note', (d) => stray.push(d));
  await sdk.sendToUser('u-1', 'note', { text: 'just for you' });
  const [[d1], [d2]] = await got;
  assert.deepEqual(d1, { text: 'just for you' });
  assert.deepEqual(d2, { text: 'just for you' });
  await sleep(200);
  assert.equal(stray.length, 0);
});

test('a sign-in signed with the wrong secret is refused and the socket is not reconnected', async () => {
  const forged = open({ signinAs: { id: 'mallory' }, sdk: serverSdk(server, { secret: 'nope' }) });
  await connected(forged);
  const codes = [];
  forged.connection.bind('error', (e) => codes.push(e?.error?.data?.code ?? e?.data?.code));
  forged.signin();
  await once((h) => forged.connection.bind('disconnected', h), 5000, 'disconnected');
  assert.ok(codes.includes(4009), `codes ${codes}`);
  await sleep(1000);
  assert.equal(forged.connection.state, 'disconnected');
});

test('terminateUserConnections closes that user everywhere with 4009, others stay', async () => {
  const t1 = open({ signinAs: { id: 'kick-me' } });
  const t2 = open({ signinAs: { id: 'kick-me' } });
  const keep = open({ signinAs: { id: 'stay' } });
  await Promise.all([signedIn(t1), signedIn(t2), signedIn(keep)]);
  const gone = Promise.all([t1, t2].map((c) => once((h) => c.connection.bind('disconnected', h), 5000, 'disconnect')));
  await sdk.terminateUserConnections('kick-me');
  await gone;
  await sleep(1000);
  assert.equal(t1.connection.state, 'disconnected', '4009: pusher-js does not reconnect');
  assert.equal(t2.connection.state, 'disconnected');
  assert.equal(keep.connection.state, 'connected');
});

test('watchlist: current state after sign-in, then online and offline changes', async () => {
  const bob = open({ signinAs: { id: 'w-bob' } });
  await signedIn(bob);
  const alice = open({ signinAs: { id: 'w-alice', watchlist: ['w-bob', 'w-carol'] } });
  const online = [];
  const offline = [];
  alice.user.watchlist.bind('online', (e) => online.push(...e.user_ids));
  alice.user.watchlist.bind('offline', (e) => offline.push(...e.user_ids));
  await signedIn(alice);
  await sleep(300);
  assert.deepEqual(online, ['w-bob']);
  assert.deepEqual(offline, ['w-carol']);
  const carol = open({ signinAs: { id: 'w-carol' } });
  await signedIn(carol);
  await sleep(300);
  assert.deepEqual(online, ['w-bob', 'w-carol']);
  carol.disconnect();
  await sleep(500);
  assert.deepEqual(offline, ['w-carol', 'w-carol']);
});

test('authorized connections: a socket that never signs in is closed, a signed-in one stays', async () => {
  const strict = await startServer([...appArgs(), '--app-user-authentication', '--app-user-authentication-timeout', '1']);
  try {
    const lurker = client(strict);
    const member = client(strict, { signinAs: { id: 'member' } });
    await connected(lurker);
    await signedIn(member);
    await once((h) => lurker.connection.bind('disconnected', h), 5000, 'lurker closed');
    await sleep(500);
    assert.equal(member.connection.state, 'connected');
    lurker.disconnect();
    member.disconnect();
  } finally {
    await strict.stop();
  }
});
