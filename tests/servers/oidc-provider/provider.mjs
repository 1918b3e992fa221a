// An OpenID Provider for the OAuth tests: panva's oidc-provider (OpenID certified) on 127.0.0.1.
// Usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// One confidential client; authorization code flow with PKCE (S256) required; RS256 ID tokens
// that carry the email claims; a fresh signing key on every start. There is no login page: the
// authorize request names the account in `login_hint` (`user-verified` or `user-unverified`),
// the interaction logs it in and consent is implied (a first-party client), so a client that
// follows redirects and keeps cookies ends at REDIRECT_URI?code=...&state=...
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
if (!redirectUri) throw new Error('usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI');

const ACCOUNTS = {
  'user-verified': { email: 'verified@example.test', email_verified: true },
  'user-unverified': { email: 'unverified@example.test', email_verified: false },
};
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: [redirectUri] }],
  jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  conformIdTokenClaims: false, // scope claims go in the ID token too, not only to userinfo
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    return ACCOUNTS[sub] && { accountId: sub, claims: async () => ({ sub, ...ACCOUNTS[sub] }) };
  },
  async loadExistingGrant(ctx) {
    const { client, session, params, provider: op } = ctx.oidc;
    const grantId = session.grantIdFor(client.clientId);
    const grant = (grantId && (await op.Grant.find(grantId)))
      || new op.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(String(params.scope));
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

// The interaction: log in the account that login_hint names.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) return next();
  const { params } = await provider.interactionDetails(ctx.req, ctx.res);
  if (!Object.hasOwn(ACCOUNTS, String(params.login_hint))) {
    ctx.status = 400;
    ctx.body = { error: 'login_hint must name one of', accounts: Object.keys(ACCOUNTS) };
    return undefined;
  }
  const login = { accountId: String(params.login_hint) };
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, { login }));
  return undefined;
});

http.createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log(`issuer ${provider.issuer}`);
});
