// Users written by the real accounts-js, for tests/test_import_accountsjs.py.
//
//   node write-users.mjs MONGODB_URL DB_NAME
//
// @accounts/server + @accounts/password + @accounts/mongo, unchanged, register users the way an
// accounts-js app does, then deactivate them, link identities and add addresses through the
// same packages. An app may keep extra fields (`validateNewUser`) and allow other usernames
// (`validateUsername`), as these options do. Prints {name: userId} as JSON on stdout.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { MongoClient } = require('mongodb');
const { Mongo } = require('@accounts/mongo');
const { AccountsPassword } = require('@accounts/password');
const { AccountsServer } = require('@accounts/server');

const [url, dbName] = process.argv.slice(2);
const client = await MongoClient.connect(url, { useUnifiedTopology: true });
const db = new Mongo(client.db(dbName));
await db.setupIndexes();
const password = new AccountsPassword({
  validateNewUser: (user) => user,
  validateUsername: (username) => typeof username === 'string' && username !== '',
});
const server = new AccountsServer(
  { db, tokenSecret: 'only-for-this-test-script-0123456789abcdef' },
  { password },
);

const ids = {};
const create = async (name, user) => {
  ids[name] = await password.createUser(user);
};
await create('alice', {
  username: 'alice', email: 'Alice@Example.com', password: 'alice-Password-1',
  profile: { name: 'Alice', plan: 'pro' },
});
// (verifyEmail sets `emails.$.verified`: the wire server has no positional updates, so
// gina's verified address comes from addEmail instead.)
await create('bob', { email: 'bob@example.com', password: 'bob-Password-22' });
await server.deactivateUser(ids.bob);
await create('carol', { username: 'carol', password: 'carol-Password-333' });
await db.setService(ids.carol, 'google', { id: 'g-123' });
await create('dave', { username: 'dave', password: 'dave-Password-4444' });
await db.setService(ids.dave, 'two-factor', { secret: { base32: 'JBSWY3DPEHPK3PXP' } });
await create('eve', { username: 'eve@home', password: 'eve-Password-55555' });
await create('frank', { email: 'taken@example.com', password: 'frank-Password-666666' });
await create('gina', { username: 'gina', password: 'gina-Password-7777777' });
await db.setService(ids.gina, 'github', { id: 42 });
await db.addEmail(ids.gina, 'gina@example.com', true);

process.stdout.write(JSON.stringify(ids));
await client.close();
