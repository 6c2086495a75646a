// Used by tls.test.mjs: the official pusher-js client with forceTLS against herald-server's own
// TLS port, trusting the test's CA through NODE_EXTRA_CA_CERTS (set by the parent). Subscribes
// to a public and a private channel, prints "subscribed", then prints each event's data as a
// line and exits 0 after the event "last".
//
//   NODE_EXTRA_CA_CERTS=ca.pem node tls-client.mjs '{"key":"..","secret":"..","appId":"..","port":1}'
import Pusher from 'pusher-js';
import PusherServer from 'pusher';

const cfg = JSON.parse(process.argv[2]);
const sdk = new PusherServer({
  appId: cfg.appId, key: cfg.key, secret: cfg.secret, host: '127.0.0.1', port: String(cfg.port), useTLS: true,
});
Pusher.logToConsole = false;
const client = new Pusher(cfg.key, {
  cluster: 'herald', wsHost: '127.0.0.1', wssPort: cfg.port, forceTLS: true,
  enabledTransports: ['ws'], disableStats: true,
  channelAuthorization: {
    customHandler: ({ socketId, channelName }, callback) => callback(null, sdk.authorizeChannel(socketId, channelName)),
  },
});
const timeout = setTimeout(() => { console.error('timed out'); process.exit(1); }, 45000);
client.connection.bind('error', (e) => { console.error('connection error', JSON.stringify(e)); });
const subscribed = (name) => new Promise((resolve) => client.subscribe(name).bind('pusher:subscription_succeeded', resolve));
await Promise.all([subscribed('tls-news'), subscribed('private-tls')]);
const done = new Promise((resolve) => {
  for (const name of ['tls-news', 'private-tls']) {
    client.channel(name).bind('news', (data) => {
      console.log(`${name} ${data.n}`);
      if (data.n === 'last') resolve();
    });
  }
});
console.log('subscribed');
await done;
clearTimeout(timeout);
client.disconnect();
process.exit(0);
