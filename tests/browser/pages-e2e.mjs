// Real Chromium (headless) through the hosted pages of `accounts-server serve --ui`, as a person
// would use them, keyboard and mouse only: register, verify the address from the mail, end
// another session and see its token refused by the API, reset a forgotten password, enrol
// TOTP, sign out and in with a code; then an admin (verified address, `--admin`) opens the
// dashboard's charts, finds the user, deactivates them, and the user's next API call fails.
// A screenshot of every page goes to $ARTIFACTS. Prints "ALL OK" at the end, exits 1 on a
// failure.
//
// What only the test's Python side can answer it asks on stdout, one line each, and reads the
// answer on stdin: "?MAIL <address> <n>" (the link in the n-th mail to the address, from the
// test's SMTP server) and "?TOTP <secret> <seconds ahead>" (pyotp's code).
// Env: APP_URL (http://localhost:PORT), CHROMIUM, ARTIFACTS (a directory), E2E_TIMEOUT_MS.
// Run by tests/http/test_pages_browser.py.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Run } from './harness.mjs';

const APP = (process.env.APP_URL ?? '').replace(/\/+$/, '');
const UI = `${APP}/accounts/ui`;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS || 'artifacts';
const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 120_000);
const PW = 'correct horse battery staple';
const NEW_PW = 'a brand new passphrase, long';
const run = new Run(TIMEOUT_MS);
let shots = 0;
const pages = [];

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** One question to the test's Python side, one line back. */
async function ask(question) {
  console.log(`?${question}`);
  const { value, done } = await answers.next();
  assert.ok(!done, `no answer to ${question}`);
  assert.ok(!value.startsWith('!'), `${question}: ${value}`);
  return value;
}

async function shot(page, name) {
  shots += 1;
  await page.screenshot({ path: `${ARTIFACTS}/${String(shots).padStart(2, '0')}-${name}.png`, fullPage: true });
}

/** The API as another program would call it (no cookies): {status, body}. */
async function api(path, { token, body } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`${APP}/accounts${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function apiLogin(email, password) {
  const login = await api('/password/authenticate', { body: { user: { email }, password } });
  assert.equal(login.status, 200, `API login: ${JSON.stringify(login)}`);
  return login.body.tokens.accessToken;
}

async function apiUser(token) {
  const found = await api('/user', { token });
  assert.equal(found.status, 200, `GET /user: ${JSON.stringify(found)}`);
  return found.body; // null: the token no longer names a user
}

async function expectPath(page, path) {
  await page.waitForURL((url) => url.pathname === `/accounts/ui${path}`);
}

/** Every page: the policy that keeps it inert, and nothing of a token in its source. */
async function assertSafe(page, response) {
  const headers = response.headers();
  assert.match(headers['content-security-policy'], /default-src 'none'/);
  assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
  assert.doesNotMatch(headers['content-security-policy'], /unsafe-inline/);
  assert.doesNotMatch(await page.content(), /eyJ[\w-]+\.eyJ/, 'a JWT in the page source');
}

async function visit(page, path) {
  const response = await page.goto(`${UI}${path}`, { waitUntil: 'load' });
  await assertSafe(page, response);
  return response;
}

async function signIn(page, user, password) {
  await visit(page, '/signin');
  await page.getByLabel('Username or email').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

/** Register with the keyboard alone: focus moves by Tab, the form is sent by Enter. */
async function register(page, username, email) {
  await visit(page, '/register');
  await page.getByLabel('Username').focus();
  await page.keyboard.type(username);
  await page.keyboard.press('Tab');
  await page.keyboard.type(email);
  await page.keyboard.press('Tab');
  await page.keyboard.type(PW);
  await page.keyboard.press('Enter');
  await expectPath(page, '/account');
}

async function verifyAddress(page, address, n) {
  await page.getByRole('button', { name: 'Send the verification mail' }).click();
  await page.getByRole('status').filter({ hasText: 'The mail is on its way' }).waitFor();
  const link = await ask(`MAIL ${address} ${n}`);
  assert.ok(link.startsWith(`${UI}/verify-email/`), `the mail links to the pages: ${link}`);
  await page.goto(link);
  await expectPath(page, '/verify-email'); // the token left the address bar at once
  assert.ok(!page.url().includes(link.split('/').pop()));
  await shot(page, 'verify-email');
  await page.getByRole('button', { name: 'Verify my address' }).click();
  await page.getByRole('heading', { name: 'Address verified' }).waitFor();
}

async function main() {
  assert.ok(APP, 'APP_URL is not set');
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await run.launch(CHROMIUM);
  const person = async () => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
    const page = await context.newPage();
    run.watch(page);
    page.setDefaultTimeout(20_000);
    pages.push(page);
    return page;
  };
  const ada = await person();
  run.step(`Chromium ${browser.version()} launched`);

  run.current = 'register';
  await visit(ada, '/signin');
  await shot(ada, 'signin');
  await visit(ada, '/register');
  await shot(ada, 'register');
  await register(ada, 'ada', 'ada@example.com');
  await shot(ada, 'account');
  assert.ok(await ada.getByText('not verified').isVisible());
  const cookies = await ada.context().cookies();
  const access = cookies.find((c) => c.name === 'ui_at');
  assert.ok(access?.httpOnly && access.sameSite === 'Lax', `the token cookie: ${JSON.stringify(access)}`);
  assert.equal(await ada.evaluate(() => document.cookie), '', 'no cookie is readable by a script');
  run.step('registered by keyboard alone; the account page; token cookies HttpOnly');

  run.current = 'verify the address';
  await verifyAddress(ada, 'ada@example.com', 1);
  await visit(ada, '/account');
  assert.equal(await ada.getByText('not verified').count(), 0);
  run.step('the verification mail from the account page, its link, the address verified');

  run.current = 'end another session';
  const elsewhere = await apiLogin('ada@example.com', PW);
  assert.equal((await apiUser(elsewhere))?.username, 'ada');
  await visit(ada, '/account');
  const rows = ada.locator('section[aria-labelledby="sessions"] tbody tr');
  assert.equal(await rows.count(), 2, 'two sessions listed');
  assert.equal(await ada.locator('tr.current').count(), 1, 'this one marked');
  await shot(ada, 'account-two-sessions');
  await ada.getByRole('button', { name: 'Sign out there' }).click();
  await ada.getByRole('status').filter({ hasText: 'Signed out there' }).waitFor();
  assert.equal(await rows.count(), 1);
  assert.equal(await apiUser(elsewhere), null, 'the ended session\'s token is refused');
  run.step('"Sign out there" ended the API session: its token is refused at once');

  run.current = 'reset a forgotten password';
  await ada.getByRole('button', { name: 'Sign out' }).first().click();
  await expectPath(ada, '/signin');
  await ada.getByRole('link', { name: 'Forgot your password?' }).click();
  await ada.getByLabel('Your account\'s email').fill('ada@example.com');
  await shot(ada, 'forgot');
  await ada.getByRole('button', { name: 'Mail me a link' }).click();
  await ada.getByRole('heading', { name: 'Check your mail' }).waitFor();
  const reset = await ask('MAIL ada@example.com 2');
  assert.ok(reset.startsWith(`${UI}/reset-password/`), reset);
  await ada.goto(reset);
  await expectPath(ada, '/reset-password');
  await shot(ada, 'reset-password');
  await ada.getByLabel('New password').fill(NEW_PW);
  await ada.getByRole('button', { name: 'Save' }).click();
  await ada.getByRole('heading', { name: 'Password set' }).waitFor();
  await signIn(ada, 'ada@example.com', PW);
  await ada.getByRole('alert').filter({ hasText: 'Invalid credentials' }).waitFor();
  assert.equal(await ada.getByLabel('Username or email').getAttribute('aria-invalid'), 'true');
  await shot(ada, 'signin-error');
  await signIn(ada, 'ada@example.com', NEW_PW);
  await expectPath(ada, '/account');
  run.step('forgot -> mail -> new password; the old one refused, the new one signs in');

  run.current = 'enrol TOTP';
  const apiSession = await apiLogin('ada@example.com', NEW_PW); // ended by the enrolment
  await ada.getByRole('link', { name: 'Turn it on' }).click();
  await expectPath(ada, '/account/two-factor');
  assert.equal(await ada.locator('.qr svg').count(), 1, 'a QR code, as SVG');
  await shot(ada, 'two-factor');
  const secret = (await ada.locator('#secret').textContent()).trim();
  assert.match(secret, /^[A-Z2-7]{16,}$/);
  await ada.getByLabel('The 6-digit code the app shows').fill(await ask(`TOTP ${secret} 0`));
  await ada.getByRole('button', { name: 'Turn on' }).click();
  await ada.getByRole('heading', { name: 'Two-factor authentication is on' }).waitFor();
  const recovery = (await ada.locator('#recovery-codes li').allTextContents()).map((c) => c.trim());
  assert.ok(recovery.length >= 8, `recovery codes shown: ${recovery}`);
  await shot(ada, 'recovery-codes');
  assert.equal(await apiUser(apiSession), null, 'turning two-factor on ended the other sessions');
  run.step('TOTP enrolled from the QR page with a pyotp code; recovery codes shown once; other sessions ended');

  run.current = 'sign in with the code';
  await visit(ada, '/account');
  await ada.getByRole('button', { name: 'Sign out' }).first().click();
  await signIn(ada, 'ada', NEW_PW);
  await expectPath(ada, '/signin/code');
  await shot(ada, 'signin-code');
  // The next step's code: the enrolment spent this step's, and a code is good once.
  await ada.getByLabel('Code from your authenticator app, or a recovery code').fill(await ask(`TOTP ${secret} 30`));
  await ada.getByRole('button', { name: 'Continue' }).click();
  await expectPath(ada, '/account');
  assert.ok(await ada.locator('section[aria-labelledby="tf"]').getByText('On', { exact: true }).isVisible());
  run.step('signed out; password, then the TOTP code: signed in, two-factor on');

  run.current = 'a passkey from the account page';
  const cdp = await ada.context().newCDPSession(ada);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  await visit(ada, '/account');
  await ada.getByLabel('Name for a new passkey').fill('This laptop');
  await ada.getByRole('button', { name: 'Add a passkey' }).click();
  await ada.getByRole('status').filter({ hasText: 'Passkey added' }).waitFor();
  const passkeyRow = ada.locator('section[aria-labelledby="pk"] tbody tr');
  assert.equal(await passkeyRow.count(), 1);
  assert.match(await passkeyRow.innerText(), /This laptop/);
  await shot(ada, 'account-passkey');
  await ada.getByRole('button', { name: 'Sign out' }).first().click();
  await expectPath(ada, '/signin');
  await ada.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await expectPath(ada, '/account');
  assert.match(await passkeyRow.innerText(), /This laptop/);
  assert.doesNotMatch(await passkeyRow.innerText(), /never/, 'its last use is shown');
  run.step('a passkey added from the account page (script + virtual authenticator); signed out; signed in with it alone');

  run.current = 'an API session with a recovery code';
  const withCode = await api('/password/authenticate', {
    body: { user: { email: 'ada@example.com' }, password: NEW_PW, code: recovery[0] },
  });
  assert.equal(withCode.status, 200, `API login with a recovery code: ${JSON.stringify(withCode)}`);
  const apiToken = withCode.body.tokens.accessToken;
  run.step('an API login with the password and a recovery code');

  run.current = 'admin: dashboard';
  const root = await person();
  await register(root, 'root', 'admin@example.com');
  assert.equal(await root.getByRole('link', { name: 'Admin console' }).count(), 0, 'no console before the address is verified');
  await verifyAddress(root, 'admin@example.com', 1);
  await visit(root, '/account');
  await root.getByRole('link', { name: 'Admin console' }).click();
  await expectPath(root, '/admin');
  assert.equal(await root.locator('figure.chart svg').count(), 4, 'four charts');
  const bars = Number(await root.locator('svg.chart-login_success').getAttribute('data-bars'));
  assert.ok(bars >= 1, 'sign-ins drawn');
  assert.ok(Number(await root.locator('svg.chart-create_user_success rect.bar').count()) >= 1, 'registrations drawn');
  const active = Number(await root.locator('#active-sessions').textContent());
  assert.ok(active >= 3, `active sessions: ${active}`);
  const box = await root.locator('svg.chart-login_success').boundingBox();
  assert.ok(box && box.width > 300 && box.height > 50, `the chart is drawn large enough: ${JSON.stringify(box)}`);
  await shot(root, 'admin-dashboard');
  run.step(`the dashboard: 4 SVG charts, ${active} active sessions`);

  run.current = 'admin: deactivate';
  assert.equal((await apiUser(apiToken))?.username, 'ada', 'ada\'s API session works before');
  await root.getByRole('link', { name: 'Users' }).click();
  await root.getByLabel('Username or email starts with').fill('ad');
  await root.getByRole('button', { name: 'Search' }).click();
  await shot(root, 'admin-users');
  await root.getByRole('link', { name: 'ada', exact: true }).click();
  await root.getByRole('heading', { name: 'ada' }).waitFor();
  assert.ok(await root.getByText(/recovery codes left/).isVisible(), 'two-factor shown on');
  await shot(root, 'admin-user');
  await root.getByRole('button', { name: 'Deactivate' }).click();
  await root.getByRole('status').filter({ hasText: 'Deactivated' }).waitFor();
  assert.equal(await apiUser(apiToken), null, 'the deactivated user\'s next API call fails');
  const gone = await api('/sessions', { token: apiToken });
  assert.equal(gone.status, 401, `GET /sessions: ${JSON.stringify(gone)}`);
  await visit(ada, '/account');
  await expectPath(ada, '/signin');
  await signIn(ada, 'ada', NEW_PW);
  await ada.getByRole('alert').waitFor();
  await shot(ada, 'signin-deactivated');
  run.step('the admin deactivated ada: her API token and her browser are refused at once');

  run.current = 'admin: audit';
  await root.getByRole('link', { name: 'Audit log', exact: true }).click();
  await root.getByLabel('Event').selectOption('admin_action');
  await root.getByRole('button', { name: 'Filter' }).click();
  await root.getByText('users.deactivate').first().waitFor();
  await shot(root, 'admin-audit');
  run.step('the audit log, filtered to admin actions, shows the deactivation');

  run.done();
  console.log(`${shots} screenshots in ${ARTIFACTS}`);
  console.log('ALL OK');
  await run.stop(0);
}

/** What each browser shows, for a failure's report. */
async function showing() {
  const shown = [];
  for (const page of pages) {
    const text = await page.locator('main').innerText({ timeout: 2000 }).catch(() => '(no main)');
    shown.push(`[${page.url()}]\n${text.slice(0, 1500)}`);
  }
  return shown.join('\n');
}

main().catch(async (error) => {
  const shown = await showing().catch(() => '');
  await run.stop(1, `not ok - ${run.current}: ${error?.stack ?? error}\n${run.log.join('\n')}\n${shown}`);
});
