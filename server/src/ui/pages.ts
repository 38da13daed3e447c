// The UI's pages as HTML, complete without JavaScript: the client script
// (assets/app.js) takes over the lists where it runs (live search, copy
// buttons) and leaves everything else as served.
import { formatSize, shortDigest } from './format.ts';
import { html, type Html } from './html.ts';
import type { RepositoryPage } from './catalog.ts';
import type { TagSummary } from './views.ts';

export interface PageContext {
  /** Where the UI is mounted, e.g. "/ui". */
  base: string;
  user?: string;
  /** The session's CSRF token (logged in) for the forms of the page. */
  csrf?: string;
  /** Whether this server takes logins at all. */
  logins: boolean;
  /** The status pages this visitor may see (linked in the header): the mirror's and the operations page. */
  status?: { mirror: boolean };
}

export function layout(ctx: PageContext, title: string, body: Html): string {
  const { base } = ctx;
  const account = ctx.user
    ? html`<form class="logout" method="post" action="${base}/logout">
        <span>Logged in as <strong>${ctx.user}</strong></span>
        <input type="hidden" name="csrf" value="${ctx.csrf}">
        <button type="submit">Log out</button>
      </form>`
    : ctx.logins
      ? html`<a href="${base}/login">Log in</a>`
      : '';
  return `<!doctype html>${html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · registry</title>
<link rel="stylesheet" href="${base}/assets/app.css">
<script type="module" src="${base}/assets/app.js"></script>
</head>
<body data-base="${base}" data-csrf="${ctx.csrf}">
<header><nav aria-label="Main"><a class="brand" href="${base}/">Repositories</a>${
    ctx.status && html`${ctx.status.mirror && html` <a href="${base}/mirror">Mirror</a>`} <a href="${base}/operations">Operations</a>`
  }</nav><div class="account">${account}</div></header>
<main id="main">
${body}
</main>
</body>
</html>`}`;
}

export function repositoriesPage(ctx: PageContext, q: string, page: RepositoryPage, loginHint: boolean, mirror: boolean): Html {
  const { base } = ctx;
  const next = page.next && `${base}/?${new URLSearchParams({ ...(q ? { q } : {}), last: page.next })}`;
  return html`<h1>Repositories</h1>
<form role="search" method="get" action="${base}/" class="search">
  <label for="q">Search repositories</label>
  <input id="q" name="q" type="search" value="${q}" autocomplete="off">
  <button type="submit">Search</button>
</form>
<div id="repositories" data-q="${q}" data-mirror="${mirror ? 'true' : 'false'}">
${repositoryList(base, page, mirror)}
${next && html`<p><a href="${next}" rel="next">Next page</a></p>`}
</div>
${loginHint && html`<p>Some repositories may be visible only once you <a href="${base}/login">log in</a>.</p>`}`;
}

function repositoryList(base: string, page: RepositoryPage, mirror: boolean): Html {
  if (page.repositories.length === 0) return html`<p role="status">No repositories found.</p>`;
  return html`<table class="list">
<caption class="sr-only">Repositories</caption>
<thead><tr><th scope="col">Repository</th><th scope="col">Tags</th><th scope="col">Size</th><th scope="col">${mirror ? 'Last fetched' : 'Last push'}</th></tr></thead>
<tbody>${page.repositories.map(
    (r) => html`<tr><td><a href="${repoUrl(base, r.name)}">${r.name}</a></td><td>${r.tags}</td><td>${r.partial ? 'over ' : ''}${formatSize(r.size)}</td><td>${
      r.lastPush ? html`<time datetime="${r.lastPush}">${r.lastPush.slice(0, 16).replace('T', ' ')}</time>` : '—'
    }</td></tr>`,
  )}</tbody>
</table>`;
}

export function repoUrl(base: string, name: string): string {
  return `${base}/repo?${new URLSearchParams({ name })}`;
}

/** The image page of a manifest (by digest or tag). */
export function imageUrl(base: string, name: string, reference: string): string {
  return `${base}/image?${new URLSearchParams({ name, reference })}`;
}

export interface RepositoryView {
  name: string;
  host: string;
  tags: TagSummary[];
  omitted: number;
  /** More than MAX_TAGS tags: pages in name order; `next` is the following page's `last`. */
  paged: boolean;
  next?: string;
  last?: string;
  canDelete: boolean;
  flash?: string;
}

export function repositoryPage(ctx: PageContext, view: RepositoryView): Html {
  const { base } = ctx;
  const deleteUrl = (reference: string) => `${base}/delete?${new URLSearchParams({ name: view.name, reference })}`;
  return html`<p><a href="${base}/">All repositories</a></p>
<h1>${view.name}</h1>
${view.flash && html`<p role="status" class="flash">${view.flash}</p>`}
<div id="tags" data-name="${view.name}" data-host="${view.host}" data-last="${view.last}">
${
  view.tags.length === 0
    ? html`<p>No tags.</p>`
    : html`<table class="list">
<caption class="sr-only">Tags of ${view.name}, ${view.paged ? 'by name' : 'newest first'}</caption>
<thead><tr><th scope="col">Tag</th><th scope="col">Digest</th><th scope="col">Size</th><th scope="col">Created</th><th scope="col">Platforms</th><th scope="col">Pull</th>${view.canDelete && html`<th scope="col">Delete</th>`}</tr></thead>
<tbody>${view.tags.map(
        (t) => html`<tr>
<td><a href="${imageUrl(base, view.name, t.digest)}">${t.tag}</a></td>
<td><code title="${t.digest}">${shortDigest(t.digest)}</code></td>
<td>${formatSize(t.size)}</td>
<td>${t.created ? html`<time datetime="${t.created}">${t.created.slice(0, 19).replace('T', ' ')}</time>` : '—'}</td>
<td>${platformList(base, view.name, t)}</td>
<td><code class="pull">docker pull ${view.host}/${view.name}:${t.tag}</code></td>
${view.canDelete && html`<td><a href="${deleteUrl(t.tag)}">Delete tag<span class="sr-only"> ${t.tag}</span></a> · <a href="${deleteUrl(t.digest)}">Delete manifest<span class="sr-only"> of ${t.tag}</span></a></td>`}
</tr>`,
      )}</tbody>
</table>`
}
${view.paged && html`<p class="pager">${view.last !== undefined && html`<a href="${repoUrl(base, view.name)}">First tags</a>`}${
    view.next && html` <a href="${`${repoUrl(base, view.name)}&${new URLSearchParams({ last: view.next })}`}" rel="next">Next tags</a> (${view.omitted} more)`
  }</p>`}
</div>`;
}

function platformList(base: string, name: string, t: TagSummary): Html | string {
  if (t.platforms.length === 0) return '—';
  // An index's platforms link to their own manifests; an image's one platform is the tag's link already.
  const item = (p: TagSummary['platforms'][number]) => `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
  return html`<ul class="platforms">${t.platforms.map((p) =>
    t.index ? html`<li><a href="${imageUrl(base, name, p.digest)}">${item(p)}</a></li>` : html`<li>${item(p)}</li>`,
  )}</ul>`;
}

export interface DeleteView {
  name: string;
  reference: string;
  /** What goes: the tag, or the manifest and every tag pointing at it. */
  digest: string;
  /** Tags that point at the manifest (all of them go when deleting by digest). */
  tags: string[];
  byDigest: boolean;
}

export function confirmDeletePage(ctx: PageContext, view: DeleteView): Html {
  const { base } = ctx;
  const what = view.byDigest
    ? html`<p>This deletes the manifest <code>${view.digest}</code> of <strong>${view.name}</strong>${
        view.tags.length > 0 ? html` and every tag pointing at it: ${view.tags.map((t, i) => html`${i ? ', ' : ''}<strong>${t}</strong>`)}` : ''
      }. Its layers are freed by the next garbage collection.</p>`
    : html`<p>This deletes the tag <strong>${view.reference}</strong> of <strong>${view.name}</strong>. The manifest it points to,
<code>${view.digest}</code>, stays (pull it by digest${
        view.tags.length > 1 ? html`, or by its other tags: ${view.tags.filter((t) => t !== view.reference).join(', ')}` : ''
      }).</p>`;
  return html`<h1>Delete ${view.byDigest ? 'manifest' : 'tag'}?</h1>
${what}
<form method="post" action="${base}/delete">
  <input type="hidden" name="csrf" value="${ctx.csrf}">
  <input type="hidden" name="name" value="${view.name}">
  <input type="hidden" name="reference" value="${view.reference}">
  <button type="submit" class="danger">Delete ${view.byDigest ? `manifest ${shortDigest(view.digest)}` : `tag ${view.reference}`}</button>
  <a href="${repoUrl(base, view.name)}">Cancel</a>
</form>`;
}

export function loginPage(ctx: PageContext, options: { token: string; error?: string; user?: string; next?: string }): Html {
  return html`<h1>Log in</h1>
${options.error && html`<p role="alert" class="error">${options.error}</p>`}
<form method="post" action="${ctx.base}/login" class="login">
  <input type="hidden" name="csrf" value="${options.token}">
  <input type="hidden" name="next" value="${options.next}">
  <label for="user">User</label>
  <input id="user" name="user" autocomplete="username" required value="${options.user}">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <button type="submit">Log in</button>
</form>`;
}

export function messagePage(title: string, message: string, link?: { href: string; text: string }): Html {
  return html`<h1>${title}</h1><p>${message}</p>${link && html`<p><a href="${link.href}">${link.text}</a></p>`}`;
}
