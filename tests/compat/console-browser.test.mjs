// The debug console and the development auth endpoint in headless Chromium (playwright-core):
// the console watches an official pusher-js client connect and subscribe, triggers an event
// from its form, the client receives it and the log shows it; a page whose pusher-js points
// its auth endpoint at --dev-auth joins a presence channel with no backend at all.
// Screenshots go to .artifacts/ (not committed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { startServer, client, connected, subscribed, once } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('./.artifacts/', import.meta.url));
const PUSHER_JS = readFileSync(createRequire(import.meta.url).resolve('pusher-js/dist/web/pusher.min.js'), 'utf8');
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (./scripts/test installs Debian's chromium)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});

after(async () => {
  await browser?.close();
});

test('the console shows a client subscribe, triggers an event it receives, and logs it', async () => {
  // The embedded default: the console is on and the banner prints its URL.
  const server = await startServer([]);
  try {
    // startServer resolves on the first banner lines; the console's comes a little later.
    for (let i = 0; i < 50 && !/Debug console/.test(server.banner()); i++) await new Promise((r) => setTimeout(r, 20));
    const url = server.banner().match(/Debug console\s*: (http:\S+)/)?.[1];
    assert.ok(url, `the banner prints the console URL:\n${server.banner()}`);
    const app = new URL(url.replace('#', '?')).searchParams;
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live');

    const sdk = { authorizeChannel: () => ({}) };
    const pusher = client(server, { key: 'herald-dev-key', sdk });
    await connected(pusher);
    const channel = await subscribed(pusher, 'console-demo');
    await page.waitForFunction(() => [...document.querySelectorAll('#log .row')].some((r) => r.textContent.includes('subscribed') && r.textContent.includes('console-demo')));
    await page.waitForFunction(() => [...document.querySelectorAll('#channels tr')].some((r) => r.dataset.channel === 'console-demo'));
    assert.equal(await page.textContent('#connections'), '1');

    const received = once((h) => channel.bind('from-console', h), 5000, 'the triggered event');
    await page.fill('#t-channel', 'console-demo');
    await page.fill('#t-event', 'from-console');
    await page.fill('#t-data', '{"via":"console"}');
    await page.click('#trigger button');
    const [data] = await received;
    assert.deepEqual(data, { via: 'console' });
    await page.waitForFunction(() => [...document.querySelectorAll('#log .row')].some((r) => r.textContent.includes('server_event') && r.textContent.includes('from-console')));

    // Filters narrow the log.
    await page.fill('#f-event', 'server_event');
    const kinds = await page.$$eval('#log .row .kind', (els) => [...new Set(els.map((e) => e.textContent))]);
    assert.deepEqual(kinds, ['server_event']);
    await page.fill('#f-event', '');
    await page.screenshot({ path: `${ARTIFACTS}console.png`, fullPage: true });
    assert.deepEqual(errors, []);
    assert.equal(app.get('app'), '1');
    pusher.disconnect();
    await page.close();
  } finally {
    await server.stop();
  }
});

test('a pusher-js page joins a presence channel through --dev-auth alone', async () => {
  const server = await startServer(['--dev-auth']);
  try {
    // A frontend dev server on another origin (as Vite's), serving the page and pusher-js.
    const html = `<!doctype html><script src="/pusher.js"></script><script>
      const pusher = new Pusher('herald-dev-key', { cluster: 'herald', wsHost: '127.0.0.1', wsPort: ${server.port},
        forceTLS: false, enabledTransports: ['ws'],
        channelAuthorization: { endpoint: 'http://127.0.0.1:${server.port}/pusher/auth', params: { user_id: 'grace', user_info: '{"name":"Grace"}' } } });
      const room = pusher.subscribe('presence-lobby');
      room.bind('pusher:subscription_succeeded', (members) => { window.me = members.me; window.count = members.count; });
      room.bind('pusher:subscription_error', (e) => { window.failure = e; });
    </script>`;
    const frontend = createServer((req, res) => {
      const js = req.url === '/pusher.js';
      res.writeHead(200, { 'content-type': js ? 'text/javascript' : 'text/html' });
      res.end(js ? PUSHER_JS : html);
    });
    await new Promise((resolve) => frontend.listen(0, '127.0.0.1', resolve));
    const page = await browser.newPage();
    await page.goto(`http://localhost:${frontend.address().port}/`);
    await page.waitForFunction(() => window.me || window.failure, null, { timeout: 10000 });
    assert.equal(await page.evaluate(() => window.failure), undefined);
    const me = await page.evaluate(() => window.me);
    assert.equal(me.id, 'grace');
    assert.deepEqual(me.info, { name: 'Grace' });
    await page.screenshot({ path: `${ARTIFACTS}dev-auth-presence.png` });
    await page.close();
    frontend.close();
  } finally {
    await server.stop();
  }
});
