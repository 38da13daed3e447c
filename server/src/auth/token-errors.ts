// The error of a token that is not good, in a module of its own: the HTTP
// layer (through token-auth.ts) needs it on every start, and jose, which the
// verifier and the issuer load, is only wanted when token auth is configured.
export class InvalidToken extends Error {}
