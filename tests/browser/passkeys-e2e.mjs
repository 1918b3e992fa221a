// Real Chromium (headless, a CDP virtual authenticator: CTAP2, internal, resident keys, user
// verification) registers and uses a passkey against accounts-server through tests/browser/page.html:
// password sign-up and login, passkey registration, logout, passwordless login, and the passkey as
// the second factor after a password (with the mfaToken refused the second time). Each step
// asserts what the browser and the server say; prints "ALL OK" at the end, exits 1 on a failure.
// Env: APP_URL (http://localhost:PORT: page at /, API at /accounts; the RP ID is "localhost"),
// CHROMIUM (default /usr/bin/chromium), E2E_TIMEOUT_MS (default 90000, the whole run).
// Run by tests/http/test_passkeys_browser.py; by hand (npm ci in tests/browser first):
//   python tests/browser/serve_for_browser.py 8123 /tmp/passkeys.db &
//   APP_URL=http://localhost:8123 node tests/browser/passkeys-e2e.mjs
import assert from 'node:assert/strict';
import { Run } from './harness.mjs';

const APP = (process.env.APP_URL ?? '').replace(/\/+$/, '');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 90_000);
const PW = 'correct horse battery staple';
const run = new Run(TIMEOUT_MS);

/** The JWT's payload (the server signs it; the browser test only reads it). */
function claims(jwt) {
  assert.equal(typeof jwt, 'string', 'an access token');
  const parts = jwt.split('.');
  assert.equal(parts.length, 3, `a JWT has three parts: ${jwt}`);
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

/** CDP speaks standard base64; WebAuthn JSON speaks base64url without padding. */
const b64url = (base64) => Buffer.from(base64, 'base64').toString('base64url');

function assertLoginResult(result, userId, label) {
  assert.equal(typeof result?.sessionId, 'string', `${label}: sessionId in ${JSON.stringify(result)}`);
  assert.equal(typeof result.tokens?.accessToken, 'string', `${label}: tokens.accessToken`);
  assert.equal(typeof result.tokens?.refreshToken, 'string', `${label}: tokens.refreshToken`);
  assert.equal(result.user?.id, userId, `${label}: the user`);
}

function assertAmr(accessToken, expected, label) {
  const amr = claims(accessToken).amr;
  assert.ok(Array.isArray(amr), `${label}: the access token has an amr array: ${JSON.stringify(claims(accessToken))}`);
  for (const value of expected) assert.ok(amr.includes(value), `${label}: amr ${JSON.stringify(amr)} lacks "${value}"`);
  return amr;
}

function assertPasskey(passkey, name) {
  assert.equal(typeof passkey?.id, 'string', `a passkey id in ${JSON.stringify(passkey)}`);
  assert.ok(passkey.id.length > 0, 'a non-empty passkey id');
  assert.equal(passkey.name, name);
  assert.equal(typeof passkey.createdAt, 'number', `createdAt (epoch ms) in ${JSON.stringify(passkey)}`);
  assert.ok(passkey.lastUsedAt === null || typeof passkey.lastUsedAt === 'number', 'lastUsedAt: null or epoch ms');
  assert.ok(Array.isArray(passkey.transports), 'transports: an array');
  assert.equal(typeof passkey.aaguid, 'string', 'aaguid: a string');
  assert.equal(typeof passkey.backupEligible, 'boolean', 'backupEligible: a boolean');
  assert.equal(typeof passkey.backedUp, 'boolean', 'backedUp: a boolean');
}

async function main() {
  assert.ok(APP, 'APP_URL is not set (http://localhost:PORT)');
  assert.equal(new URL(APP).hostname, 'localhost', 'the RP ID is "localhost": APP_URL must use it');

  const browser = await run.launch(CHROMIUM);
  const context = await browser.newContext();
  const page = await context.newPage();
  run.watch(page);
  page.setDefaultTimeout(30_000);
  run.step(`Chromium ${browser.version()} launched`);

  run.current = 'virtual authenticator';
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const credentials = async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
  run.step('virtual authenticator added (ctap2, internal, resident keys, user verified)');

  run.current = 'open the test page';
  await page.goto(`${APP}/`, { waitUntil: 'load' });
  const env = await page.evaluate(() => ({
    secure: window.isSecureContext,
    origin: location.origin,
    parse: typeof PublicKeyCredential?.parseCreationOptionsFromJSON === 'function'
      && typeof PublicKeyCredential?.parseRequestOptionsFromJSON === 'function',
    toJSON: typeof PublicKeyCredential?.prototype?.toJSON === 'function',
    page: typeof window.registerPasskey === 'function',
  }));
  assert.deepEqual(env, { secure: true, origin: APP, parse: true, toJSON: true, page: true });
  run.step(`test page at ${APP}/ (a secure context with the WebAuthn JSON helpers)`);

  // a. A password account, and a password login.
  run.current = 'a. password sign-up and login';
  const email = `passkey-${Date.now()}@example.com`;
  const username = `passkey${Date.now()}`;
  const signUp = await page.evaluate(
    ([u, e, p]) => window.call('/password/register', { body: { user: { username: u, email: e, password: p } } }),
    [username, email, PW],
  );
  assert.equal(signUp.status, 200, `register: ${JSON.stringify(signUp)}`);
  const userId = signUp.body?.userId;
  assert.equal(typeof userId, 'string', `register answers {userId}: ${JSON.stringify(signUp.body)}`);
  run.step('a. password/register -> 200 {userId}');

  const login = await page.evaluate(([e, p]) => window.passwordLogin(e, p), [email, PW]);
  assertLoginResult(login, userId, 'password login');
  assert.equal(login.user.emails?.[0]?.address, email);
  assertAmr(login.tokens.accessToken, ['pwd'], 'password login');
  const accessToken = login.tokens.accessToken;
  run.step('a. password/authenticate -> LoginResult (amr has "pwd")');

  // b. Register a passkey for the signed-in user.
  run.current = 'b. passkey registration';
  const registered = await page.evaluate(([t, n]) => window.registerPasskey(t, n), [accessToken, 'Chromium']);
  const creation = registered.options;
  assert.equal(creation.rp?.id, 'localhost', `rp.id in ${JSON.stringify(creation)}`);
  assert.equal(typeof creation.challenge, 'string', 'challenge: base64url');
  assert.equal(typeof creation.user?.id, 'string', 'user.id: base64url');
  assert.ok(Array.isArray(creation.pubKeyCredParams) && creation.pubKeyCredParams.length > 0, 'pubKeyCredParams');
  assert.equal(registered.credential.type, 'public-key');
  assert.equal(registered.credential.id, registered.credential.rawId);
  assertPasskey(registered.passkey, 'Chromium');
  const passkeyId = registered.passkey.id;
  run.step(`b. webauthn/register/options -> create() -> register/verify -> passkey ${JSON.stringify(registered.passkey)}`);

  let stored = await credentials();
  assert.equal(stored.length, 1, `one credential on the authenticator: ${JSON.stringify(stored)}`);
  assert.equal(stored[0].isResidentCredential, true, 'a resident (discoverable) credential');
  assert.equal(stored[0].rpId, 'localhost');
  assert.equal(b64url(stored[0].credentialId), registered.credential.id, 'the credential the browser returned');
  assert.equal(b64url(stored[0].userHandle), creation.user.id, 'the user handle the server chose');
  let signCount = stored[0].signCount;
  run.step(`b. WebAuthn.getCredentials: one resident credential for rpId localhost (signCount ${signCount})`);

  let listed = await page.evaluate((t) => window.listPasskeys(t), accessToken);
  assert.ok(Array.isArray(listed), `webauthn/credentials answers an array: ${JSON.stringify(listed)}`);
  assert.equal(listed.length, 1, `one passkey listed: ${JSON.stringify(listed)}`);
  assertPasskey(listed[0], 'Chromium');
  assert.equal(listed[0].id, passkeyId);
  run.step('b. webauthn/credentials lists it, named "Chromium"');

  // c. Log out; the old access token no longer names a user.
  run.current = 'c. logout';
  const logout = await page.evaluate((t) => window.call('/logout', { token: t }), accessToken);
  assert.deepEqual(logout, { status: 200, body: null }, `logout: ${JSON.stringify(logout)}`);
  const after = await page.evaluate((t) => window.call('/user', { method: 'GET', token: t }), accessToken);
  assert.deepEqual(after, { status: 200, body: null }, `GET /user after logout: ${JSON.stringify(after)}`);
  run.step('c. logout -> 200 null; GET /user with the old token -> 200 null');

  // d. Passwordless: a discoverable credential, no allowCredentials.
  run.current = 'd. passwordless login';
  const passwordless = await page.evaluate(() => window.loginWithPasskey());
  const request = passwordless.options;
  assert.equal(typeof request.challenge, 'string', `challenge in ${JSON.stringify(request)}`);
  assert.ok(request.rpId === undefined || request.rpId === 'localhost', `rpId: ${request.rpId}`);
  assert.ok(!request.allowCredentials || request.allowCredentials.length === 0, 'discoverable: no allowCredentials');
  assert.equal(passwordless.assertion.id, registered.credential.id, 'the registered credential answered');
  assert.equal(passwordless.assertion.response.userHandle, creation.user.id, 'a user handle (discoverable)');
  assertLoginResult(passwordless.result, userId, 'passkey login');
  const amrPasswordless = assertAmr(passwordless.result.tokens.accessToken, ['hwk', 'user'], 'passkey login');
  const me = await page.evaluate((t) => window.currentUser(t), passwordless.result.tokens.accessToken);
  assert.equal(me?.id, userId, `GET /user with the passkey login's token: ${JSON.stringify(me)}`);
  run.step(`d. webauthn/login/options -> get() -> webauthn/authenticate -> LoginResult (amr ${JSON.stringify(amrPasswordless)}); GET /user -> the user`);

  stored = await credentials();
  assert.ok(stored[0].signCount > signCount, `signCount rose: ${signCount} -> ${stored[0].signCount}`);
  signCount = stored[0].signCount;
  listed = await page.evaluate((t) => window.listPasskeys(t), passwordless.result.tokens.accessToken);
  assert.equal(listed.length, 1);
  assert.equal(typeof listed[0].lastUsedAt, 'number', `lastUsedAt set by the login: ${JSON.stringify(listed[0])}`);
  run.step(`d. the authenticator's signCount rose (now ${signCount}); the passkey's lastUsedAt is set`);

  // e. Password first: the passkey is now the second factor.
  run.current = 'e. password, then the passkey as second factor';
  const mfa = await page.evaluate(([e, p]) => window.passwordThenPasskey(e, p), [email, PW]);
  const challenge = mfa.challenge;
  assert.equal(mfa.status, 401);
  assert.equal(challenge.code, 'TwoFactorCodeRequired');
  assert.equal(challenge.message, '2FA code required');
  assert.equal(typeof challenge.mfaToken, 'string', `mfaToken in ${JSON.stringify(challenge)}`);
  assert.ok(challenge.mfaToken.length > 0);
  assert.deepEqual(challenge.factors, ['webauthn']);
  const second = challenge.challenges?.webauthn;
  assert.equal(typeof second?.challenge, 'string', `challenges.webauthn: ${JSON.stringify(challenge.challenges)}`);
  assert.ok(Array.isArray(second.allowCredentials), 'allowCredentials lists the passkeys');
  assert.deepEqual(second.allowCredentials.map((c) => c.id), [registered.credential.id]);
  assert.ok(second.allowCredentials.every((c) => c.type === 'public-key'));
  run.step('e. password/authenticate -> 401 TwoFactorCodeRequired {mfaToken, factors ["webauthn"], challenges.webauthn with allowCredentials}');

  assert.equal(mfa.assertion.id, registered.credential.id);
  assertLoginResult(mfa.result, userId, 'password + passkey');
  const amrMfa = assertAmr(mfa.result.tokens.accessToken, ['pwd', 'hwk', 'mfa'], 'password + passkey');
  const me2 = await page.evaluate((t) => window.currentUser(t), mfa.result.tokens.accessToken);
  assert.equal(me2?.id, userId);
  run.step(`e. get() -> mfa/authenticate -> LoginResult (amr ${JSON.stringify(amrMfa)})`);

  stored = await credentials();
  assert.ok(stored[0].signCount > signCount, `signCount rose: ${signCount} -> ${stored[0].signCount}`);
  signCount = stored[0].signCount;
  run.step(`e. the authenticator's signCount rose again (now ${signCount})`);

  const mfaAgain = ([token, webauthn]) => window.call('/mfa/authenticate', { body: { mfaToken: token, webauthn } });
  const replay = await page.evaluate(mfaAgain, [challenge.mfaToken, mfa.assertion]);
  assert.ok(replay.status >= 400 && replay.status < 500, `the replay is refused with a 4xx: ${JSON.stringify(replay)}`);
  assert.equal(typeof replay.body?.code, 'string', `a JSON error with a code: ${JSON.stringify(replay)}`);
  run.step(`e. the same mfaToken and assertion again -> ${replay.status} ${replay.body.code}`);

  // The used mfaToken with a fresh, valid assertion (from a second password step) is refused
  // too: single use is the token's, not only the challenge's. The fresh pair still works.
  const fresh = await page.evaluate(([e, p]) => window.passwordFirstStep(e, p), [email, PW]);
  assert.notEqual(fresh.challenge.mfaToken, challenge.mfaToken, 'a new mfaToken');
  const used = await page.evaluate(mfaAgain, [challenge.mfaToken, fresh.assertion]);
  assert.equal(used.status, 401, `the used mfaToken with a fresh assertion: ${JSON.stringify(used)}`);
  assert.equal(used.body?.code, 'InvalidToken', `the used mfaToken with a fresh assertion: ${JSON.stringify(used)}`);
  const redeemed = await page.evaluate(mfaAgain, [fresh.challenge.mfaToken, fresh.assertion]);
  assert.equal(redeemed.status, 200, `the fresh mfaToken with its assertion: ${JSON.stringify(redeemed)}`);
  assertLoginResult(redeemed.body, userId, 'second password + passkey');
  assertAmr(redeemed.body.tokens.accessToken, ['pwd', 'hwk', 'mfa'], 'second password + passkey');
  stored = await credentials();
  assert.ok(stored[0].signCount > signCount, `signCount rose: ${signCount} -> ${stored[0].signCount}`);
  signCount = stored[0].signCount;
  run.step(`e. the used mfaToken with a fresh assertion -> 401 InvalidToken; the fresh mfaToken with it -> LoginResult (signCount ${signCount})`);

  run.current = 'close';
  run.done();
  await browser.close();
  run.browser = undefined;
  console.log(`passkeys end-to-end: ${Date.now() - run.started} ms`);
  console.log('ALL OK');
}

main().catch((error) => {
  run.done();
  const log = run.log.length ? `\nbrowser log:\n${run.log.join('\n')}` : '';
  void run.stop(1, `not ok - ${run.current}: ${error?.stack ?? error}${log}`);
});
