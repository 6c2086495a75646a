// The chat example (examples/chat) in headless Chromium, driven by playwright-core: two
// browser contexts on the official pusher-js client see each other's presence, "typing…"
// client events and messages, against the built herald-server and the example's own backend
// (official server SDK).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer, appArgs, APP } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const EXAMPLE = fileURLToPath(new URL('../../examples/chat/', import.meta.url));
let herald;
let backend;
let browser;
let url;

// HERALD_CHAT_TARGET (JSON: appId, key, secret, clientPort, apiPort) points the page at servers
// someone else runs: the Kubernetes e2e test sets it to its two `--apps kubernetes` pods, with
// the PusherApp's credentials. Without it, the test starts its own server.
const TARGET = process.env.HERALD_CHAT_TARGET ? JSON.parse(process.env.HERALD_CHAT_TARGET) : null;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (./scripts/test installs Debian's chromium)`);
  assert.ok(existsSync(`${EXAMPLE}node_modules/pusher-js`), 'run npm ci in examples/chat (./scripts/test does)');
  let target = TARGET;
  if (!target) {
    herald = await startServer(appArgs());
    target = { appId: APP.id, key: APP.key, secret: APP.secret, clientPort: herald.port, apiPort: herald.port };
  }
  backend = spawn(process.execPath, ['server.mjs'], {
    cwd: EXAMPLE,
    env: {
      ...process.env, PORT: '0', PUSHER_APP_ID: target.appId, PUSHER_KEY: target.key, PUSHER_SECRET: target.secret,
      PUSHER_HOST: '127.0.0.1', PUSHER_PORT: String(target.apiPort), PUSHER_BROWSER_PORT: String(target.clientPort),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('chat backend did not start')), 10000);
    let out = '';
    backend.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+/);
      if (m) { clearTimeout(timer); resolve(m[0]); }
    });
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});

after(async () => {
  await browser?.close();
  backend?.kill();
  await herald?.stop();
});

async function join(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.fill('#name', name);
  await page.click('#join button');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  return { context, page, errors };
}

const members = (page) => page.$$eval('#members li', (lis) => lis.map((li) => li.textContent));

test('two browsers see each other join, type, post and leave', async () => {
  const ada = await join('Ada');
  const bob = await join('Bob');

  for (const who of [ada, bob]) {
    await who.page.waitForFunction(() => document.querySelectorAll('#members li').length === 2);
    assert.deepEqual(await members(who.page), ['Ada', 'Bob']);
  }

  // Client event on the presence channel: Bob sees Ada typing.
  await ada.page.type('#text', 'hello Bob');
  await bob.page.waitForFunction(() => document.getElementById('typing').textContent === 'Ada is typing…');

  // Message through the backend (server SDK) on the private channel; count on the public one.
  await ada.page.press('#text', 'Enter');
  for (const who of [ada, bob]) {
    await who.page.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === 'Ada: hello Bob'));
    await who.page.waitForFunction(() => document.getElementById('count').textContent === '1 message');
  }
  await bob.page.fill('#text', 'hi Ada');
  await bob.page.press('#text', 'Enter');
  await ada.page.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === 'Bob: hi Ada'));
  await ada.page.waitForFunction(() => document.getElementById('count').textContent === '2 messages');

  // Bob closes his browser: Ada's presence list drops him.
  await bob.context.close();
  await ada.page.waitForFunction(() => document.querySelectorAll('#members li').length === 1);
  assert.deepEqual(await members(ada.page), ['Ada']);
  assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  await ada.context.close();
});
