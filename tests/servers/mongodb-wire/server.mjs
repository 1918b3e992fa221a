// CongoDB, an in-memory server that speaks the MongoDB wire protocol, with ./fixes.mjs applied.
// Usage: node server.mjs PORT   (listens on 127.0.0.1 only; SIGTERM stops it, nothing to flush)
import { CongoServer } from '@push.rocks/smartmongo/dist_ts/congodb/index.js';
import { sweepExpired } from './fixes.mjs';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) throw new Error('usage: node server.mjs PORT');
const server = new CongoServer({ host: '127.0.0.1', port, storage: 'memory' });
await server.start();
setInterval(() => sweepExpired(server.getStorage()), 1000);
console.log(`listening on ${server.getConnectionUri()}`);
