// TLS on Herald's own port, as a small install without a proxy runs it: --tls-cert-file and
// --tls-key-file serve wss:// and https:// with a certificate from a CA the test makes; the
// official pusher-js client (forceTLS: true) and server SDK (useTLS: true) work against it; the
// certificate files are replaced (as cert-manager rotates them) and new handshakes get the new
// certificate while the connected client stays connected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import PusherServer from 'pusher';
import { APP, appArgs, startServer } from './harness.mjs';

function openssl(dir, args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA and a certificate for 127.0.0.1 it signed, written as `${name}.pem` / `${name}.key`. */
function issue(dir, name) {
  openssl(dir, ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
  execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ${name}.ext`], { cwd: dir });
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`]);
}

function peerSerial(port, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.on('error', reject);
  });
}

test('pusher-js and the server SDK over TLS on the public port, through a certificate rotation', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-tls-'));
  openssl(dir, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=herald compat CA', '-keyout', 'ca.key', '-out', 'ca.pem']);
  issue(dir, 'first');
  const ca = readFileSync(join(dir, 'ca.pem'));
  const server = await startServer([...appArgs(), '--tls-cert-file', join(dir, 'first.pem'), '--tls-key-file', join(dir, 'first.key')]);
  try {
    assert.match(server.banner(), /wss:\/\/127\.0\.0\.1:\d+\/app\/<key>\s+https:\/\/127\.0\.0\.1/);
    const child = spawn(process.execPath, ['tls-client.mjs', JSON.stringify({ appId: APP.id, key: APP.key, secret: APP.secret, port: server.port })], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    for (let i = 0; i < 150 && !out.includes('subscribed'); i++) await sleep(100);
    assert.ok(out.includes('subscribed'), `pusher-js subscribed over wss://: ${out} ${err}`);

    const sdk = new PusherServer({
      appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(server.port), useTLS: true,
      agent: new https.Agent({ ca }),
    });
    await sdk.trigger(['tls-news', 'private-tls'], 'news', { n: 'before' });
    for (let i = 0; i < 50 && !out.includes('private-tls before'); i++) await sleep(100);
    assert.match(out, /tls-news before/);
    assert.match(out, /private-tls before/);

    // Rotation: new key and certificate moved over the old files, as cert-manager does.
    const before = await peerSerial(server.port, ca);
    issue(dir, 'second');
    renameSync(join(dir, 'second.key'), join(dir, 'first.key'));
    renameSync(join(dir, 'second.pem'), join(dir, 'first.pem'));
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await sleep(100);
      after = await peerSerial(server.port, ca);
    }
    assert.notEqual(after, before, 'new handshakes get the rotated certificate');
    // The client connected before the rotation is still there.
    await sdk.trigger(['tls-news', 'private-tls'], 'news', { n: 'last' });
    const code = await exited;
    assert.equal(code, 0, `the client kept its connection through the rotation: ${out} ${err}`);
    assert.match(out, /tls-news last/);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a certificate file that cannot be read stops the server at start with the reason', async () => {
  await assert.rejects(
    startServer([...appArgs(), '--tls-cert-file', '/nonexistent/cert.pem', '--tls-key-file', '/nonexistent/key.pem']),
    /TLS on the public port: cannot read \/nonexistent\/cert\.pem/,
  );
});
