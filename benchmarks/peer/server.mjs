// accounts-js serving the accounts-js REST routes, as the peer of benchmarks/run.py.
//
//   node server.mjs PORT TOKENS_FILE SESSIONS [MONGODB_URL]
//
// @accounts/server + @accounts/password + @accounts/rest-express on express, unchanged. The
// database is an in-memory implementation of accounts-js's DatabaseInterface (its best case:
// no I/O at all), or @accounts/mongo when MONGODB_URL is given. Before listening it registers
// the user `bench` and opens SESSIONS sessions with loginWithUser, writing one
// "accessToken refreshToken" line per session to TOKENS_FILE for the refresh and logout runs.
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';

import { AccountsPassword } from '@accounts/password';
import accountsRest from '@accounts/rest-express';
import { AccountsServer } from '@accounts/server';
import express from 'express';

const [port, tokensFile, sessions, mongoUrl] = process.argv.slice(2);
const PASSWORD = 'correct horse battery staple';

// Only what the benchmarked routes reach; anything else fails loudly instead of lying.
class MemoryDatabase {
  users = new Map();
  usernames = new Map();
  emails = new Map();
  sessions = new Map();
  sessionTokens = new Map();

  async createUser({ password, username, email, ...rest }) {
    const now = new Date();
    const user = { ...rest, id: randomUUID(), services: { password: { bcrypt: password } } };
    Object.assign(user, { deactivated: false, createdAt: now, updatedAt: now });
    if (username) {
      if (this.usernames.has(username)) throw new Error('Username already exists');
      user.username = username;
      this.usernames.set(username, user.id);
    }
    if (email) {
      user.emails = [{ address: email.toLowerCase(), verified: false }];
      this.emails.set(email.toLowerCase(), user.id);
    }
    this.users.set(user.id, user);
    return user.id;
  }
  async findUserById(id) {
    return this.users.get(id) ?? null;
  }
  async findUserByUsername(username) {
    return this.users.get(this.usernames.get(username)) ?? null;
  }
  async findUserByEmail(email) {
    return this.users.get(this.emails.get(email.toLowerCase())) ?? null;
  }
  async findPasswordHash(userId) {
    return this.users.get(userId)?.services.password.bcrypt ?? null;
  }
  async createSession(userId, token, connection = {}, extraData) {
    const now = new Date();
    const session = { id: randomUUID(), userId, token, valid: true, extraData };
    Object.assign(session, { ip: connection.ip, userAgent: connection.userAgent });
    Object.assign(session, { createdAt: now, updatedAt: now });
    this.sessions.set(session.id, session);
    this.sessionTokens.set(token, session.id);
    return session.id;
  }
  async findSessionById(id) {
    return this.sessions.get(id) ?? null;
  }
  async findSessionByToken(token) {
    return this.sessions.get(this.sessionTokens.get(token)) ?? null;
  }
  async updateSession(id, connection, newToken) {
    const session = this.sessions.get(id);
    Object.assign(session, { ip: connection.ip, userAgent: connection.userAgent });
    session.updatedAt = new Date();
    if (newToken) {
      this.sessionTokens.delete(session.token);
      session.token = newToken;
      this.sessionTokens.set(newToken, id);
    }
  }
  async invalidateSession(id) {
    const session = this.sessions.get(id);
    Object.assign(session, { valid: false, updatedAt: new Date() });
  }
}

const unsupported = {
  get(target, name) {
    if (name in target || typeof name !== 'string' || name === 'then') return target[name];
    return () => Promise.reject(new Error(`MemoryDatabase.${name} is not implemented`));
  },
};

async function database() {
  if (!mongoUrl) return new Proxy(new MemoryDatabase(), unsupported);
  const { MongoClient } = (await import('mongodb')).default; // CommonJS packages
  const { Mongo } = (await import('@accounts/mongo')).default;
  const client = await MongoClient.connect(mongoUrl, { useUnifiedTopology: true });
  const db = client.db(`accounts_js_${Date.now()}`);
  const mongo = new Mongo(db);
  await mongo.setupIndexes();
  return mongo;
}

const password = new AccountsPassword();
const server = new AccountsServer(
  { db: await database(), tokenSecret: randomBytes(32).toString('hex') },
  { password },
);

const user = await server.findUserById(
  await password.createUser({ username: 'bench', password: PASSWORD }),
);
const lines = [];
for (let i = 0; i < Number(sessions); i += 1) {
  const { tokens } = await server.loginWithUser(user, { ip: '127.0.0.1', userAgent: 'bench' });
  lines.push(`${tokens.accessToken} ${tokens.refreshToken}`);
}
writeFileSync(tokensFile, `${lines.join('\n')}\n`);

const app = express();
app.use(express.json());
app.use(accountsRest.default(server));
app.get('/', (req, res) => res.json(null));
app.listen(Number(port), '127.0.0.1');
