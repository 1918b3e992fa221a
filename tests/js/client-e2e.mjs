// The official accounts-js client (@accounts/client + rest-client + client-password), unchanged,
// against accounts-server. Every step asserts what the client sees; prints "ALL OK" at the end.
// Env: API_URL (http://127.0.0.1:PORT), MAILDIR (the SMTP test server's Maildir).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import clientPkg from '@accounts/client';
import restPkg from '@accounts/rest-client';
import passwordPkg from '@accounts/client-password';

const { AccountsClient } = clientPkg;
const { RestClient } = restPkg;
const { AccountsClientPassword } = passwordPkg;
const API = process.env.API_URL;
const MAILDIR = process.env.MAILDIR;
const PW = 'correct horse battery staple';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

function makeClient() {
  const transport = new RestClient({ apiHost: API, rootPath: '/accounts' });
  const client = new AccountsClient({ tokenStorage: memoryStorage() }, transport);
  return { client, password: new AccountsClientPassword(client) };
}

function step(name) {
  console.log(`ok - ${name}`);
}

async function expectCode(promise, code) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    return;
  }
  assert.fail(`expected the error ${code}`);
}

async function expectMessage(promise, message) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.message, message);
    return;
  }
  assert.fail(`expected the error "${message}"`);
}

// RFC 6238 TOTP, as an authenticator app computes it from the base32 secret. `serverSkew` is
// how far the server's clock is behind ours, read off a token's `iat` (serve_for_client.py
// runs a clock in the past); `offset` picks a neighbouring 30-second step.
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const char of text.replace(/=+$/, '')) bits += alphabet.indexOf(char).toString(2).padStart(5, '0');
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

function totp(base32, serverSkew, offset = 0) {
  const counter = Math.floor((Date.now() / 1000 - serverSkew) / 30) + offset;
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = crypto.createHmac('sha1', base32Decode(base32)).update(message).digest();
  const at = mac[19] & 0xf;
  return String((mac.readUInt32BE(at) & 0x7fffffff) % 1000000).padStart(6, '0');
}

function skewOf(accessToken) {
  const payload = JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url'));
  return Date.now() / 1000 - payload.iat;
}

// The link token of the newest mail to `to` whose link path is `kind`, waiting for it.
async function mailToken(to, kind, seen) {
  for (let i = 0; i < 200; i += 1) {
    for (const folder of ['new', 'cur']) {
      const dir = path.join(MAILDIR, folder);
      if (!fs.existsSync(dir)) continue;
      for (const file of fs.readdirSync(dir).sort()) {
        if (seen.has(file)) continue;
        const raw = fs.readFileSync(path.join(dir, file), 'utf8');
        if (!new RegExp(`^To: ${to}$`, 'mi').test(raw)) continue;
        // Quoted-printable soft breaks and escapes, as the mail may carry long lines.
        const text = raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
        const match = text.match(new RegExp(`/${kind}/([A-Za-z0-9_-]+)`));
        if (match) {
          seen.add(file);
          return match[1];
        }
      }
    }
    await sleep(50);
  }
  throw new Error(`no ${kind} mail to ${to}`);
}

const seen = new Set();
const email = 'js-user@example.com';
const { client, password } = makeClient();

// Anonymous: the client sends `Authorization: ''`, and /user must answer null.
assert.equal(await client.getUser(), null);
step('anonymous getUser is null');

const created = await password.createUser({ username: 'jsuser', email, password: PW });
assert.ok(created.userId);
step('createUser');
await expectCode(password.createUser({ username: 'other', email, password: PW }), 'EmailAlreadyExists');
step('createUser with a taken email throws EmailAlreadyExists');
await expectCode(password.login({ user: { email }, password: 'not the password' }), 'InvalidCredentials');
step('wrong password throws InvalidCredentials');

const login = await client.loginWithService('password', { user: { email }, password: PW });
assert.equal(login.user.username, 'jsuser');
assert.ok(login.tokens.accessToken && login.tokens.refreshToken);
step('loginWithService(password)');
assert.equal((await client.getUser()).id, created.userId);
step('getUser');

const before = await client.getTokens();
const forced = await client.refreshSession(true);
assert.notEqual(forced.refreshToken, before.refreshToken);
assert.equal((await client.getUser()).id, created.userId);
step('refreshSession(true) rotates the pair');

// Let the access token expire, then fire several authFetch calls at once: each refreshes with
// the same refresh token. With the grace window they all get the same successor; the client
// must stay logged in.
await sleep(6500);
const users = await Promise.all([1, 2, 3, 4, 5, 6].map(() => client.getUser()));
for (const user of users) assert.equal(user.id, created.userId);
const after = await client.getTokens();
assert.ok(after && after.refreshToken !== forced.refreshToken);
assert.equal((await client.getUser()).id, created.userId);
step('concurrent refreshes on expiry keep the session');

const NEW = 'a brand new passphrase';
await expectCode(password.changePassword('not the password', NEW), 'InvalidCredentials');
await password.changePassword(PW, NEW);
assert.equal((await client.getUser()).id, created.userId); // this session survives
await expectCode(password.login({ user: { email }, password: PW }), 'InvalidCredentials');
await password.login({ user: { email }, password: NEW });
step('changePassword');

assert.equal((await client.getUser()).emails[0].verified, false);
await password.requestVerificationEmail(email);
const verifyToken = await mailToken(email, 'verify-email', seen);
await password.verifyEmail(verifyToken);
assert.equal((await client.getUser()).emails[0].verified, true);
await expectCode(password.verifyEmail(verifyToken), 'InvalidToken');
step('requestVerificationEmail + verifyEmail');

await password.requestPasswordReset(email);
await password.requestPasswordReset('nobody@example.com'); // same answer, no error
const resetToken = await mailToken(email, 'reset-password', seen);
const RESET = 'reset via the js client';
await password.resetPassword(resetToken, RESET);
assert.equal(await client.getUser(), null); // a reset ends every session
await expectCode(password.resetPassword(resetToken, 'and once more please'), 'InvalidToken');
await password.login({ user: { email }, password: RESET });
step('requestPasswordReset + resetPassword');

// Two-factor through the client's transport, as an app's settings page would call it.
{
  const transport = client.transport;
  const skew = skewOf((await client.getTokens()).accessToken);
  const { secret } = await transport.getTwoFactorSecret(); // sent without a token
  assert.ok(secret.base32 && secret.otpauth_url.startsWith('otpauth://totp/'));
  const wrong = totp(secret.base32, skew, 10);
  await expectMessage(transport.twoFactorSet(secret, wrong), "2FA code didn't match");
  const set = await transport.twoFactorSet(secret, totp(secret.base32, skew));
  assert.equal(set.recoveryCodes.length, 10);
  await expectMessage(transport.twoFactorSet(secret, totp(secret.base32, skew)), '2FA already set');
  step('getTwoFactorSecret + twoFactorSet');

  await expectMessage(password.login({ user: { email }, password: RESET }), '2FA code required');
  await expectCode(password.login({ user: { email }, password: 'not the password', code: wrong }), 'InvalidCredentials');
  const code = totp(secret.base32, skew, 1);
  const withCode = await password.login({ user: { email }, password: RESET, code });
  const amr = JSON.parse(Buffer.from(withCode.tokens.accessToken.split('.')[1], 'base64url')).amr;
  assert.deepEqual(amr, ['mfa', 'otp', 'pwd']);
  assert.equal((await client.getUser()).id, created.userId);
  await expectMessage(password.login({ user: { email }, password: RESET, code }), "2FA code didn't match");
  step('login with a code, once');

  await transport.twoFactorUnset(set.recoveryCodes[0]);
  await expectMessage(transport.twoFactorUnset(set.recoveryCodes[1]), '2FA not set');
  await password.login({ user: { email }, password: RESET });
  step('twoFactorUnset (with a recovery code)');
}

const admin = makeClient();
await admin.password.createUser({ username: 'admin', email: 'admin@example.com', password: PW });
await admin.password.login({ user: { username: 'admin' }, password: PW });
await assert.rejects(client.impersonate({ username: 'admin' }), /unauthorized/);
const impersonation = await admin.client.impersonate({ username: 'jsuser' });
assert.equal(impersonation.authorized, true);
assert.equal((await admin.client.getUser()).username, 'jsuser');
await admin.client.stopImpersonation();
assert.equal((await admin.client.getUser()).username, 'admin');
step('impersonate + stopImpersonation');

await client.logout();
assert.equal(await client.getUser(), null);
assert.equal(await client.getTokens(), null);
step('logout');

console.log('ALL OK');
