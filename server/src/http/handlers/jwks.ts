// GET /auth/jwks.json: the built-in token server's public keys as a JWK set
// (RFC 7517), so that another registry can trust its tokens with
// auth.token.jwks set to this URL. Keys that still verify tokens are listed,
// the newest (signing) one included; a rotated key stays until nothing it
// signed can be alive. Public by nature, so no credentials are asked.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TokenService } from '../../auth/token-service.ts';
import { RegistryError } from '../../registry/errors.ts';

/** A verifier refetches on an unknown kid anyway; a minute keeps caches from serving a removed key for long. */
const MAX_AGE_S = 60;

export async function jwksEndpoint(req: IncomingMessage, res: ServerResponse, tokens: TokenService): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new RegistryError('UNSUPPORTED', `${req.method} is not supported on the JWK set`);
  const body = Buffer.from(JSON.stringify(await tokens.publicKeys()));
  res.writeHead(200, {
    'Content-Type': 'application/jwk-set+json',
    'Content-Length': body.length,
    'Cache-Control': `public, max-age=${MAX_AGE_S}`,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
