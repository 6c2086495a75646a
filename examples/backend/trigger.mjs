// Trigger events on Herald with the official Node server SDK (npm i pusher). Only the host
// and port differ from hosted Pusher.
//
//   PUSHER_APP_ID=1 PUSHER_KEY=herald-dev-key PUSHER_SECRET=herald-dev-secret node trigger.mjs
import Pusher from 'pusher';

const pusher = new Pusher({
  appId: process.env.PUSHER_APP_ID ?? '1',
  key: process.env.PUSHER_KEY ?? 'herald-dev-key',
  secret: process.env.PUSHER_SECRET ?? 'herald-dev-secret',
  host: process.env.PUSHER_HOST ?? '127.0.0.1',   // in Kubernetes: <cluster>.<namespace>.svc
  port: process.env.PUSHER_PORT ?? '6001',
  useTLS: false,
});

await pusher.trigger('lobby', 'count', { messages: 42 });
await pusher.trigger(['private-room'], 'message', { user: 'backend', text: 'hello from Node' });
const res = await pusher.get({ path: '/channels', params: { info: 'subscription_count' } });
console.log('occupied channels:', JSON.stringify(await res.json()));
