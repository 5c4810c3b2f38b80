// A real OpenID Connect provider (the certified `oidc-provider` package) for the test suite.
//
//   node server.mjs CONFIG.json
//
// CONFIG.json: {"issuer": "https://127.0.0.1:PORT", "host": "127.0.0.1", "port": PORT,
//               "cert": PEM-file, "key": PEM-file, "accessTokenTtl": seconds, "refreshTokenTtl": seconds,
//               "clients": [{client_id, client_secret, redirect_uris, grant_types, response_types}]}
//
// Every account exists: signing in as an e-mail address makes it the account id (`sub`) and the
// `email` claim, so Dovecot's oauth2 passdb finds the mailbox user in the introspection answer.
// Sign-in and consent are two small HTML forms of ours (the package's own development pages warn
// on every request and cannot be told to deny consent). Prints "listening ISSUER" once it serves.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'test' };

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: ['test-cookie-key'] },
  scopes: ['openid', 'email', 'offline_access'],
  claims: { email: ['email', 'email_verified'] },
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, email_verified: true }),
  }),
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true, allowedPolicy: async () => true },
    // Open dynamic registration (RFC 7591): a test whose redirect URI is known only once its server runs.
    registration: { enabled: true },
  },
  // A client allowed the refresh_token grant always gets one (Google's access_type=offline in effect).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => false,
  ttl: {
    AccessToken: config.accessTokenTtl,
    RefreshToken: config.refreshTokenTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    Grant: config.refreshTokenTtl,
    Interaction: 600,
    Session: 3600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Error</title><h1>${escape(out.error)}</h1><p>${escape(out.error_description || '')}</p>`;
  },
});
provider.proxy = false;

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, title, body) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><h1>${escape(title)}</h1>${body}</body></html>`);
}

async function formBody(req) {
  let raw = '';
  for await (const chunk of req) raw += chunk;
  return new URLSearchParams(raw);
}

async function grantConsent(details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
  const client = await provider.Client.find(details.params.client_id);
  if (req.method === 'GET') {
    if (details.prompt.name === 'login') {
      return page(res, 'Sign in to the test provider', `
        <form method="post" action="/interaction/${uid}/login">
          <label>E-mail <input type="email" name="login" autofocus required></label>
          <button type="submit">Sign in</button>
        </form>
        <form method="post" action="/interaction/${uid}/deny"><button type="submit">Cancel</button></form>`);
    }
    return page(res, `Allow ${client.clientName || client.clientId} to access your mail?`, `
      <p>Signed in as <strong>${escape(details.session.accountId)}</strong>.</p>
      <p>Scopes: ${escape(details.params.scope)}</p>
      <form method="post" action="/interaction/${uid}/consent"><button type="submit">Allow</button></form>
      <form method="post" action="/interaction/${uid}/deny"><button type="submit">Deny</button></form>`);
  }
  const form = await formBody(req);
  let result;
  if (action === 'login') {
    result = { login: { accountId: form.get('login').trim().toLowerCase() } };
  } else if (action === 'consent') {
    result = { consent: { grantId: await grantConsent(details) } };
  } else {
    result = { error: 'access_denied', error_description: 'The user denied the request.' };
  }
  return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const handler = provider.callback();
const server = createServer({ cert: readFileSync(config.cert), key: readFileSync(config.key) }, async (req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(login|consent|deny))?$/.exec(req.url.split('?')[0]);
  if (!match) return handler(req, res);
  try {
    return await interaction(req, res, match[1], match[2]);
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    return res.end(`interaction failed: ${err.message}`);
  }
});
server.listen(config.port, config.host, () => {
  process.stdout.write(`listening ${config.issuer}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
