// The web UI at <prefix>/ui/ on the API listener: pages, a few read-only
// JSON endpoints, login and logout, deletes. Every answer carries a strict
// Content-Security-Policy (scripts and styles from this server only, none
// inline); every change (login, logout, delete) needs a CSRF token; the
// session cookie is HttpOnly, SameSite=Strict, and Secure whenever the
// client reached us over TLS (directly, or through a trusted proxy).
import type { IncomingMessage, ServerResponse } from 'node:http';
import proxyAddr from 'proxy-addr';
import type { Identity, RequestAuthenticator } from '../auth/authenticator.ts';
import type { AccountState } from '../auth/setup.ts';
import type { LoginBudget } from '../auth/htpasswd.ts';
import type { Logger } from '../log/logger.ts';
import type { Activity } from '../ops/activity.ts';
import type { StatusService } from '../ops/status.ts';
import { tryParseDigest } from '../registry/digest.ts';
import { RegistryError } from '../registry/errors.ts';
import { isValidName, isValidTag } from '../registry/names.ts';
import type { LocalRegistry } from '../registry/local-registry.ts';
import type { RegistryService } from '../registry/types.ts';
import { UiAccess } from './access.ts';
import { Assets } from './assets.ts';
import type { Html } from './html.ts';
import { shortDigest } from './format.ts';
import { loadImage } from './image.ts';
import { imagePage } from './image-page.ts';
import { confirmDeletePage, imageUrl, layout, loginPage, messagePage, type PageContext, repositoriesPage, repositoryPage, repoUrl } from './pages.ts';
import { Sessions, sameToken, token } from './sessions.ts';
import { mirrorPage, operationsPage } from './status-pages.ts';
import { ManifestSummaries } from './views.ts';
import { RepositoryCatalog } from './catalog.ts';

/** The rate limits of the API listener, as far as the UI needs them. */
export interface UiLimits {
  beforeAuth(ip: string): Promise<void>;
  loginBudget(ip: string): LoginBudget | undefined;
}

export interface UiOptions {
  /** Where pages are read from: the local store (the mirror's cache in mirror mode). */
  store: LocalRegistry;
  /** Where deletes go: the registry the API serves. */
  service: RegistryService;
  authenticator: RequestAuthenticator;
  /** Whether the server checks passwords (auth.htpasswd or auth.access): otherwise there is no login. */
  logins: boolean;
  /** The account as it is now: a session ends when it is gone or its password changed, and has its rights as they are now. */
  account?: (user: string) => Promise<AccountState | undefined>;
  limits?: UiLimits;
  /** ratelimit.trustedproxies: whose X-Forwarded-Proto is believed. */
  trustedProxies: string[];
  logger: Logger;
  sessions?: Sessions;
  assets?: Assets;
  /** What the mirror and operations pages show (absent: no such pages). */
  status?: StatusService;
  /** Says when a push, a delete or a mirror fetch changed what the repository list shows. */
  activity?: Activity;
}

export interface UiRequest {
  /** The path below http.prefix, starting with /ui. */
  pathname: string;
  query: URLSearchParams;
  /** The client's address (X-Forwarded-For from trusted proxies). */
  client: string;
  /** http.prefix, without a trailing slash. */
  prefix: string;
}

/** Answers one UI request; resolves to the user (for the access log). */
export type UiHandler = (req: IncomingMessage, res: ServerResponse, request: UiRequest) => Promise<string | undefined>;

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');
const SESSION_COOKIE = 'rs_ui_session';
/** The login form's own CSRF token (double submit: cookie and field), before there is a session. */
const LOGIN_COOKIE = 'rs_ui_login';
const MAX_FORM_BYTES = 16 * 1024;
const PAGE_SIZE = 50;

export function createUi(options: UiOptions): UiHandler {
  const sessions = options.sessions ?? new Sessions();
  const assets = options.assets ?? new Assets();
  const access = new UiAccess(options.authenticator);
  const summaries = new ManifestSummaries(options.store);
  const catalog = new RepositoryCatalog(options.store);
  options.activity?.onChange((name) => catalog.changed(name));
  const trust = proxyAddr.compile(options.trustedProxies);

  return async (req, res, request) => {
    const base = `${request.prefix}/ui`;
    const path = request.pathname.slice('/ui'.length) || '/';
    const secure = isSecure(req, trust);
    const cookies = parseCookies(req.headers.cookie);
    let session = sessions.get(cookies[SESSION_COOKIE]);
    /** The session's user with their rights as they are now. */
    let identity: Identity | undefined;
    // The status pages are for those who run the registry: anyone logged in, or anyone where nobody logs in.
    const mayOperate = () => options.status !== undefined && (session !== undefined || !options.logins);
    const ctx = (): PageContext => ({
      base,
      user: session?.identity.user,
      csrf: session?.csrf,
      logins: options.logins,
      status: mayOperate() ? { mirror: options.status!.isMirror } : undefined,
    });
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'same-origin');
    res.setHeader('X-Frame-Options', 'DENY');

    const send = (status: number, title: string, body: Html, headers: Record<string, string | string[]> = {}) => {
      const text = layout(ctx(), title, body);
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text), ...headers });
      res.end(req.method === 'HEAD' ? undefined : text);
    };
    const json = (status: number, value: unknown) => {
      const text = JSON.stringify(value);
      res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    };
    const redirect = (location: string, headers: Record<string, string | string[]> = {}) => {
      res.writeHead(303, { Location: location, 'Cache-Control': 'no-store', 'Content-Length': 0, ...headers }).end();
    };
    const cookie = (name: string, value: string, maxAgeS?: number) =>
      [`${name}=${value}`, `Path=${base}`, 'HttpOnly', 'SameSite=Strict', secure && 'Secure', maxAgeS !== undefined && `Max-Age=${maxAgeS}`]
        .filter(Boolean)
        .join('; ');
    const visible = (name: string) => access.may(identity, name, 'pull');
    /** A form of a change: parsed, with its CSRF token checked against the session's. */
    const changeForm = async (): Promise<URLSearchParams | undefined> => {
      const form = await readForm(req);
      const header = req.headers['x-csrf-token'];
      if (!session || !sameToken(form.get('csrf') ?? (typeof header === 'string' ? header : undefined), session.csrf)) return undefined;
      return form;
    };
    const method = req.method ?? 'GET';
    const reading = method === 'GET' || method === 'HEAD';

    try {
      await options.limits?.beforeAuth(request.client);
      if (session) {
        const state = options.account ? await options.account(session.identity.user) : { stamp: session.stamp, may: session.identity.may };
        if (state && state.stamp === session.stamp) {
          identity = { user: session.identity.user, may: state.may };
        } else {
          sessions.delete(session.id);
          session = undefined;
        }
      }
      if (path === '/' && reading) {
        const q = (request.query.get('q') ?? '').slice(0, 200);
        const page = await catalog.page({ q, last: request.query.get('last') ?? undefined, n: PAGE_SIZE, visible });
        send(200, 'Repositories', repositoriesPage(ctx(), q, page, !session && options.logins, options.status?.isMirror ?? false));
      } else if (path === '/api/repositories' && reading) {
        const n = Math.min(Math.max(Number(request.query.get('n')) || PAGE_SIZE, 1), 200);
        const q = (request.query.get('q') ?? '').slice(0, 200);
        json(200, await catalog.page({ q, last: request.query.get('last') || undefined, n, visible }));
      } else if ((path === '/repo' || path === '/api/tags') && reading) {
        const name = request.query.get('name') ?? '';
        if (!isValidName(name) || !(await visible(name))) {
          if (!session && options.logins && path === '/repo') return redirect(`${base}/login?${new URLSearchParams({ next: repoUrl(base, name) })}`), undefined;
          return path === '/repo' ? send(404, 'Not found', messagePage('Not found', `There is no repository ${name} you may see.`)) : json(404, { error: 'not found' }), undefined;
        }
        const last = request.query.get('last') || undefined;
        const { tags, omitted, next, paged } = await summaries.tags(name, last);
        const canDelete = options.service.capabilities.delete && identity !== undefined && (await access.may(identity, name, 'delete'));
        if (path === '/api/tags') {
          json(200, { name, tags, omitted, next, paged, canDelete });
        } else {
          const deleted = request.query.get('deleted');
          const host = String(req.headers.host ?? 'localhost');
          send(200, name, repositoryPage(ctx(), { name, host, tags, omitted, next, paged, last, canDelete, flash: deleted ? `Deleted ${deleted}.` : undefined }));
        }
      } else if (path === '/image' && reading) {
        const name = request.query.get('name') ?? '';
        const reference = request.query.get('reference') ?? '';
        const wellFormed = isValidName(name) && (isValidTag(reference) || tryParseDigest(reference) !== undefined);
        if (!wellFormed || !(await visible(name))) {
          // Logging in cannot make a malformed name or reference exist.
          if (wellFormed && !session && options.logins) return redirect(`${base}/login?${new URLSearchParams({ next: imageUrl(base, name, reference) })}`), undefined;
          return send(404, 'Not found', messagePage('Not found', `There is no image ${name} you may see.`)), undefined;
        }
        const view = await loadImage(options.store, name, reference);
        send(200, `${name}@${shortDigest(view.digest)}`, imagePage(ctx(), view, String(req.headers.host ?? 'localhost')));
      } else if (path === '/delete' && reading) {
        const name = request.query.get('name') ?? '';
        const reference = request.query.get('reference') ?? '';
        const refused = await deleteRefusal(identity, name, reference);
        if (refused) return send(refused.status, 'Not allowed', messagePage('Not allowed', refused.message, refused.link)), session?.identity.user;
        const digest = tryParseDigest(reference) ? reference : (await summaries.summary(name, reference)).digest;
        const tags: string[] = [];
        for (const t of (await summaries.tags(name)).tags) if (t.digest === digest) tags.push(t.tag);
        send(200, 'Delete?', confirmDeletePage(ctx(), { name, reference, digest, tags, byDigest: digest === reference }));
      } else if (path === '/delete' && method === 'POST') {
        const form = await changeForm();
        if (!form) return send(403, 'Refused', messagePage('Refused', session ? 'The form was stale: reload the page and try again.' : 'Log in to delete.', { href: `${base}/login`, text: 'Log in' })), session?.identity.user;
        const name = form.get('name') ?? '';
        const reference = form.get('reference') ?? '';
        const refused = await deleteRefusal(identity, name, reference);
        if (refused) return send(refused.status, 'Not allowed', messagePage('Not allowed', refused.message, refused.link)), session?.identity.user;
        await options.service.deleteManifest(name, reference);
        catalog.changed(name);
        options.logger.info({ user: session!.identity.user, repo: name, reference }, 'ui: deleted');
        const deleted = tryParseDigest(reference) ? `${name}@${reference}` : `${name}:${reference}`;
        redirect(`${repoUrl(base, name)}&${new URLSearchParams({ deleted })}`);
      } else if ((path === '/mirror' || path === '/operations' || path === '/api/mirror' || path === '/api/operations') && reading) {
        const page = path.endsWith('mirror') ? 'mirror' : 'operations';
        const api = path.startsWith('/api/');
        const status = options.status;
        if (!status || (page === 'mirror' && !status.isMirror)) {
          return api ? json(404, { error: 'not found' }) : send(404, 'Not found', messagePage('Not found', 'There is no such page on this registry.')), undefined;
        }
        if (!mayOperate()) {
          if (api) return json(401, { error: 'log in first' }), undefined;
          return redirect(`${base}/login?${new URLSearchParams({ next: `${base}/${page}` })}`), undefined;
        }
        if (page === 'mirror') {
          const value = (await status.mirror(visible))!;
          if (api) json(200, value);
          else send(200, 'Mirror', mirrorPage(ctx(), value));
        } else {
          const value = await status.operations();
          if (api) json(200, value);
          else send(200, 'Operations', operationsPage(ctx(), value));
        }
      } else if (path === '/login' && reading) {
        if (!options.logins) return send(404, 'Not found', messagePage('No logins', 'This registry checks no passwords, so there is nothing to log in to.')), undefined;
        const t = token();
        send(200, 'Log in', loginPage(ctx(), { token: t, next: request.query.get('next') ?? undefined }), { 'Set-Cookie': cookie(LOGIN_COOKIE, t, 3600) });
      } else if (path === '/login' && method === 'POST') {
        const form = await readForm(req);
        const t = token();
        const again = (status: number, error: string) =>
          send(status, 'Log in', loginPage(ctx(), { token: t, error, user: form.get('user') ?? undefined, next: form.get('next') ?? undefined }), {
            'Set-Cookie': cookie(LOGIN_COOKIE, t, 3600),
          });
        if (!options.logins) return send(404, 'Not found', messagePage('No logins', 'This registry checks no passwords.')), undefined;
        if (!sameToken(form.get('csrf') ?? undefined, cookies[LOGIN_COOKIE])) return again(403, 'The form was stale: try again.'), undefined;
        const loggedIn = await access.login(form.get('user') ?? '', form.get('password') ?? '', options.limits?.loginBudget(request.client));
        if (!loggedIn) return again(401, 'Wrong user or password.'), undefined;
        if (session) sessions.delete(session.id);
        session = sessions.create(loggedIn, (await options.account?.(loggedIn.user))?.stamp);
        const next = form.get('next') ?? '';
        // Only a path of the UI: never an open redirect elsewhere.
        const target = next.startsWith(`${base}/`) && !next.startsWith('//') ? next : `${base}/`;
        redirect(target, { 'Set-Cookie': [cookie(SESSION_COOKIE, session.id), cookie(LOGIN_COOKIE, '', 0)] });
      } else if (path === '/logout' && method === 'POST') {
        const form = await changeForm();
        if (!form) return send(403, 'Refused', messagePage('Refused', 'The form was stale: reload the page and try again.')), session?.identity.user;
        const user = session!.identity.user;
        sessions.delete(session!.id);
        session = undefined;
        redirect(`${base}/`, { 'Set-Cookie': cookie(SESSION_COOKIE, '', 0) });
        return user;
      } else if (path.startsWith('/assets/') && reading) {
        const asset = await assets.get(path.slice('/assets/'.length));
        if (!asset) return send(404, 'Not found', messagePage('Not found', 'No such file (is the UI built? npm run build).')), undefined;
        if (req.headers['if-none-match'] === asset.etag) return res.writeHead(304, { ETag: asset.etag }).end(), undefined;
        res.writeHead(200, { 'Content-Type': asset.type, 'Content-Length': asset.body.length, ETag: asset.etag, 'Cache-Control': 'no-cache' });
        res.end(req.method === 'HEAD' ? undefined : asset.body);
      } else if (path === '' || (path === '/' && !reading)) {
        send(405, 'Not allowed', messagePage('Not allowed', `${method} is not supported here.`));
      } else {
        send(404, 'Not found', messagePage('Not found', 'There is no such page.', { href: `${base}/`, text: 'Repositories' }));
      }
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'TOOMANYREQUESTS') {
        const retry = (err.detail as { retryAfterSeconds?: number } | undefined)?.retryAfterSeconds ?? 60;
        send(429, 'Too many attempts', messagePage('Too many attempts', `Too many requests or failed logins from your address: try again in ${retry} s.`), { 'Retry-After': String(retry) });
      } else if (err instanceof RegistryError && (err.code === 'MANIFEST_UNKNOWN' || err.code === 'NAME_UNKNOWN')) {
        send(404, 'Not found', messagePage('Not found', err.message, { href: `${base}/`, text: 'Repositories' }));
      } else if (err instanceof FormTooLarge) {
        send(413, 'Too large', messagePage('Too large', 'The form was too large.'));
      } else {
        options.logger.error({ err, path: request.pathname }, 'ui request failed');
        if (!res.headersSent) send(500, 'Error', messagePage('Something went wrong', 'The server logged what went wrong.'));
        else res.destroy();
      }
    }
    return session?.identity.user;
  };

  /** Why this visitor may not delete reference of name (undefined: they may). */
  async function deleteRefusal(
    identity: Identity | undefined,
    name: string,
    reference: string,
  ): Promise<{ status: number; message: string; link?: { href: string; text: string } } | undefined> {
    if (!isValidName(name) || !(isValidTag(reference) || tryParseDigest(reference))) return { status: 400, message: 'That is not a repository and a tag or digest.' };
    if (!options.service.capabilities.delete) return { status: 403, message: 'Deletes are disabled on this registry (storage.delete.enabled, and never on a mirror).' };
    if (!identity) return { status: 403, message: 'Log in to delete.' };
    if (!(await access.may(identity, name, 'delete'))) return { status: 403, message: `You may not delete in ${name}.` };
    return undefined;
  }
}

/** Whether the client reached us over TLS: the socket, or X-Forwarded-Proto from a trusted proxy. */
function isSecure(req: IncomingMessage, trust: (addr: string, i: number) => boolean): boolean {
  if ('encrypted' in req.socket && req.socket.encrypted) return true;
  const forwarded = req.headers['x-forwarded-proto'];
  const proto = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0].trim();
  return proto === 'https' && trust(req.socket.remoteAddress ?? '', 0);
}

function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

class FormTooLarge extends Error {}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > MAX_FORM_BYTES) throw new FormTooLarge();
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
