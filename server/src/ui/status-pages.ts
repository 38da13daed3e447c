// The mirror page (/ui/mirror) and the operations page (/ui/operations),
// complete without JavaScript. The part that changes (#live) is what the
// client refreshes: it fetches the page again and swaps that part in, so the
// server's rendering is the only one.
import type { MirrorStatus, OperationsStatus } from '../ops/status.ts';
import { areaChart } from './chart.ts';
import { formatSize, shortDigest } from './format.ts';
import { html, type Html } from './html.ts';
import { type PageContext, repoUrl } from './pages.ts';

/** Seconds between the client's refreshes of a status page. */
const REFRESH_S = 5;

export function mirrorPage(ctx: PageContext, s: MirrorStatus): Html {
  const { base } = ctx;
  const lookups = s.hits + s.misses;
  const cap = s.cache.maxBytes;
  return html`<h1>Mirror</h1>
<div id="live" data-refresh="${REFRESH_S}">
<section aria-labelledby="cache">
<h2 id="cache">Cache</h2>
<dl class="facts">
  <dt>Size</dt><dd>${formatSize(s.cache.bytes)} in ${count(s.cache.blobs, 'blob')}${
    cap !== undefined ? html` of ${formatSize(cap)} (${percent(s.cache.bytes / cap)}, cache.maxsize)` : ' (no size cap: cache.maxsize is not set)'
  }</dd>
  ${cap !== undefined && html`<dt>Use</dt><dd><meter min="0" max="${cap}" value="${Math.min(s.cache.bytes, cap)}" aria-label="Cache use">${percent(s.cache.bytes / cap)}</meter></dd>`}
  <dt>Hit ratio</dt><dd>${
    s.hitRatio === undefined ? 'no lookups yet' : html`${percent(s.hitRatio)} of ${lookups} lookups (${s.hits} hits, ${s.misses} misses)`
  }</dd>
  <dt>From the cache</dt><dd>${formatSize(s.hitBytes)}</dd>
  <dt>Fetched upstream</dt><dd>${formatSize(s.missBytes)}</dd>
</dl>
<p class="muted">Counted since the server started (${time(s.since)}); the blobs were counted at ${time(s.cache.countedAt)}, and fills added since.</p>
</section>
<section aria-labelledby="upstreams">
<h2 id="upstreams">Upstreams</h2>
<table class="list">
<caption class="sr-only">Upstream registries</caption>
<thead><tr><th scope="col">Upstream</th><th scope="col">State</th><th scope="col">Requests</th><th scope="col">Errors</th><th scope="col">Pull limit left</th></tr></thead>
<tbody>${s.upstreams.map(
    (u) => html`<tr><th scope="row">${u.host}</th><td>${
      u.state === 'healthy' ? 'healthy' : html`<strong class="error">circuit open</strong> since ${time(u.downSince!)}: cached tags served without asking it`
    }</td><td>${u.requests}</td><td>${u.errors}</td><td>${u.rateLimitRemaining ?? '—'}</td></tr>`,
  )}</tbody>
</table>
</section>
<section aria-labelledby="fills">
<h2 id="fills">Fills in flight</h2>
${
  s.fills.length === 0
    ? html`<p>None: nothing is being fetched from an upstream now.</p>`
    : html`<table class="list">
<caption class="sr-only">Blobs being fetched into the cache</caption>
<thead><tr><th scope="col">Repository</th><th scope="col">Blob</th><th scope="col">Received</th></tr></thead>
<tbody>${s.fills.map(
        (f) => html`<tr><td>${f.repository ?? '—'}</td><td><code title="${f.digest}">${shortDigest(f.digest)}</code></td><td>${
          f.received === undefined ? '—' : formatSize(f.received)
        }${f.size !== undefined && html` of ${formatSize(f.size)}${f.received !== undefined && f.size > 0 && ` (${percent(f.received / f.size)})`}`}</td></tr>`,
      )}</tbody>
</table>`
}
</section>
<section aria-labelledby="pulled">
<h2 id="pulled">Most pulled</h2>
${
  s.mostPulled.length === 0
    ? html`<p>Nothing pulled since the server started.</p>`
    : html`<table class="list">
<caption class="sr-only">Most pulled repositories since the start</caption>
<thead><tr><th scope="col">Repository</th><th scope="col">Pulls</th></tr></thead>
<tbody>${s.mostPulled.map((p) => html`<tr><td><a href="${repoUrl(base, p.name)}">${p.name}</a></td><td>${p.pulls}</td></tr>`)}</tbody>
</table>`
}
<p class="muted">Pulls are manifest GETs: a multi-arch image counts its index and its platform's manifest. <a href="${base}/">The cached repositories</a>.</p>
</section>
</div>`;
}

export function operationsPage(ctx: PageContext, s: OperationsStatus): Html {
  const disk = s.storage.disk;
  const labels = { from: hhmm(s.series[0]?.at), to: 'now' };
  return html`<h1>Operations</h1>
<div id="live" data-refresh="${REFRESH_S * 6}">
<section aria-labelledby="maintenance">
<h2 id="maintenance">Maintenance</h2>
<table class="list">
<caption class="sr-only">The last maintenance runs</caption>
<thead><tr><th scope="col">Run</th><th scope="col">Last</th><th scope="col">Removed</th><th scope="col">Freed</th><th scope="col">Schedule</th></tr></thead>
<tbody>
${s.mode === 'registry' ? gcRow(s) : pruneRow(s)}
</tbody>
</table>
<p class="muted">Runs of any server on this storage: in-server schedules and the admin listener's <code>POST /admin/gc</code> and <code>/admin/prune</code>, which the host's cron jobs call, and the offline <code>registry garbage-collect</code> and <code>prune</code> commands.</p>
</section>
<section aria-labelledby="disk">
<h2 id="disk">Disk use</h2>
<dl class="facts">
  <dt>Blobs stored</dt><dd>${formatSize(s.storage.bytes)} in ${count(s.storage.blobs, 'blob')} (counted at ${time(s.storage.countedAt)})</dd>
  <dt>Storage</dt><dd>${s.storage.driver === 's3' ? 'S3 bucket' : 'filesystem'}</dd>
  ${
    disk &&
    html`<dt>Disk</dt><dd>${formatSize(disk.totalBytes - disk.freeBytes)} used of ${formatSize(disk.totalBytes)}, ${formatSize(disk.freeBytes)} free (${percent(
      disk.totalBytes > 0 ? (disk.totalBytes - disk.freeBytes) / disk.totalBytes : 0,
    )} used)</dd>`
  }
</dl>
</section>
<section aria-labelledby="activity">
<h2 id="activity">The last 24 hours</h2>
${areaChart({ id: 'pulls', title: 'Pulls per 5 minutes', values: s.series.map((b) => b.pulls), format: (v) => String(v), ...labels })}
${areaChart({ id: 'bytes', title: 'Bytes sent per 5 minutes', values: s.series.map((b) => b.bytes), format: formatSize, ...labels })}
</section>
</div>`;
}

function gcRow(s: OperationsStatus): Html {
  const run = s.gc;
  const r = run?.result;
  return html`<tr><th scope="row">Garbage collection</th>${
    !run
      ? html`<td colspan="3">none recorded</td>`
      : html`<td>${time(run.finishedAt)}${r?.dryRun && ' (dry run)'}${run.error && html`: <span class="error">failed: ${run.error}</span>`}</td>
<td>${r ? `${count(r.manifestsDeleted, 'manifest')}, ${count(r.blobsDeleted, 'blob')}` : '—'}</td><td>${r ? formatSize(r.bytesFreed) : '—'}</td>`
  }<td>${schedule(s.gcIntervalMs, 'gc.interval')}</td></tr>`;
}

function pruneRow(s: OperationsStatus): Html {
  const run = s.prune;
  const r = run?.result;
  return html`<tr><th scope="row">Cache prune</th>${
    !run
      ? html`<td colspan="3">none recorded</td>`
      : html`<td>${time(run.finishedAt)}${r?.dryRun && ' (dry run)'}${run.error && html`: <span class="error">failed: ${run.error}</span>`}</td>
<td>${r ? `${count(r.tagsDeleted, 'tag')}, ${count(r.manifestsDeleted, 'manifest')}, ${count(r.blobsDeleted, 'blob')}` : '—'}</td><td>${r ? formatSize(r.bytesFreed) : '—'}</td>`
  }<td>${schedule(s.pruneIntervalMs, 'cache.interval')}</td></tr>`;
}

function schedule(ms: number, key: string): string {
  if (ms <= 0) return `on request (${key} is 0)`;
  const h = ms / 3_600_000;
  return h >= 1 ? `every ${Number(h.toFixed(1))} h` : `every ${Math.round(ms / 60_000)} min`;
}

function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

function percent(ratio: number): string {
  return `${(ratio * 100).toFixed(ratio < 0.1 ? 1 : 0)}%`;
}

function time(iso: string): Html {
  return html`<time datetime="${iso}">${iso.slice(0, 19).replace('T', ' ')} UTC</time>`;
}

function hhmm(iso: string | undefined): string {
  return iso ? `${iso.slice(11, 16)} UTC yesterday` : '';
}
