// The image page (/ui/image?name=…&reference=…): one manifest, complete
// without JavaScript. Every value on it was written by whoever pushed the
// image (labels, env, history), so all of it goes through html``, which escapes.
import { formatSize, shortDigest } from './format.ts';
import { html, type Html } from './html.ts';
import type { Blob, ConfigView, ImageView } from './image.ts';
import { imageUrl, type PageContext, repoUrl } from './pages.ts';

export function imagePage(ctx: PageContext, view: ImageView, host: string): Html {
  const { base } = ctx;
  const link = (digest: string) => html`<a href="${imageUrl(base, view.name, digest)}"><code>${digest}</code></a>`;
  return html`<p><a href="${base}/">All repositories</a> › <a href="${repoUrl(base, view.name)}">${view.name}</a></p>
<h1>${view.name}@${shortDigest(view.digest)}</h1>
<section aria-labelledby="manifest">
<h2 id="manifest">${view.index ? 'Index' : 'Manifest'}</h2>
<dl class="facts">
  <dt>Media type</dt><dd><code>${view.mediaType}</code></dd>
  ${view.artifactType && html`<dt>Artifact type</dt><dd><code>${view.artifactType}</code></dd>`}
  <dt>Digest</dt><dd><code>${view.digest}</code></dd>
  <dt>Size</dt><dd>${formatSize(view.size)} (${view.size} bytes)</dd>
  ${view.subject && html`<dt>Subject</dt><dd>${link(view.subject.digest)}</dd>`}
  <dt>Pull</dt><dd><code class="pull">docker pull ${host}/${view.name}@${view.digest}</code></dd>
</dl>
${pairsTable('Annotations', view.annotations)}
</section>
${view.index ? platforms(ctx, view) : image(view)}
<section aria-labelledby="referrers">
<h2 id="referrers">Referrers</h2>
${
  view.referrers.length === 0
    ? html`<p>No signatures, SBOMs or other artifacts refer to this manifest.</p>`
    : html`<table class="list">
<caption class="sr-only">Manifests whose subject is this one</caption>
<thead><tr><th scope="col">Artifact type</th><th scope="col">Digest</th><th scope="col">Size</th><th scope="col">Annotations</th></tr></thead>
<tbody>${view.referrers.map(
        (r) => html`<tr><td><code>${r.artifactType ?? r.mediaType}</code></td><td>${link(r.digest)}</td><td>${formatSize(r.size)}</td><td>${
          r.annotations.length === 0 ? '—' : html`<ul class="plain">${r.annotations.map(([k, v]) => html`<li><code>${k}</code>: ${v}</li>`)}</ul>`
        }</td></tr>`,
      )}</tbody>
</table>`
}
</section>`;
}

function platforms(ctx: PageContext, view: ImageView): Html {
  const total = view.manifests.reduce((sum, m) => sum + m.size, 0);
  return html`<section aria-labelledby="platforms">
<h2 id="platforms">Platforms</h2>
${
  view.manifests.length === 0
    ? html`<p>This index lists no manifests.</p>`
    : html`<table class="list">
<caption class="sr-only">The manifests of this index</caption>
<thead><tr><th scope="col">Platform</th><th scope="col">Manifest</th><th scope="col">Media type</th><th scope="col">Manifest size</th></tr></thead>
<tbody>${view.manifests.map(
        (m) => html`<tr><td>${m.platform ?? '—'}</td><td><a href="${imageUrl(ctx.base, view.name, m.digest)}"><code title="${m.digest}">${shortDigest(m.digest)}</code><span class="sr-only"> (${m.platform ?? 'no platform'})</span></a></td><td><code>${m.mediaType}</code></td><td>${formatSize(m.size)}</td></tr>`,
      )}</tbody>
<tfoot><tr><th scope="row" colspan="3">${view.manifests.length} manifests</th><td>${formatSize(total)}</td></tr></tfoot>
</table>`
}
</section>`;
}

function image(view: ImageView): Html {
  const layersTotal = view.layers.reduce((sum, l) => sum + l.size, 0);
  const total = view.size + (view.configBlob?.size ?? 0) + layersTotal;
  return html`<section aria-labelledby="config">
<h2 id="config">Config</h2>
${view.configBlob && html`<p>Blob <code>${view.configBlob.digest}</code> (<code>${view.configBlob.mediaType}</code>, ${formatSize(view.configBlob.size)}).</p>`}
${view.config ? config(view.config) : html`<p>The config could not be read (missing, over 1 MiB, or not JSON).</p>`}
</section>
<section aria-labelledby="layers">
<h2 id="layers">Layers</h2>
${
  view.layers.length === 0
    ? html`<p>No layers.</p>`
    : html`<table class="list">
<caption class="sr-only">Layers, base first</caption>
<thead><tr><th scope="col">#</th><th scope="col">Digest</th><th scope="col">Media type</th><th scope="col">Size</th></tr></thead>
<tbody>${view.layers.map(
        (l: Blob, i) => html`<tr><td>${i + 1}</td><td><code title="${l.digest}">${shortDigest(l.digest)}</code></td><td><code>${l.mediaType}</code></td><td>${formatSize(l.size)}</td></tr>`,
      )}</tbody>
<tfoot>
<tr><th scope="row" colspan="3">Layers (${view.layers.length})</th><td>${formatSize(layersTotal)}</td></tr>
<tr><th scope="row" colspan="3">Total with manifest and config</th><td>${formatSize(total)}</td></tr>
</tfoot>
</table>`
}
</section>`;
}

function config(c: ConfigView): Html {
  const command = (words: string[] | undefined) => (words ? html`<code>${JSON.stringify(words)}</code>` : '—');
  return html`<dl class="facts">
  <dt>Platform</dt><dd>${c.platform ?? '—'}</dd>
  <dt>Created</dt><dd>${c.created ? html`<time datetime="${c.created}">${c.created.slice(0, 19).replace('T', ' ')}</time>` : '—'}</dd>
  <dt>Entrypoint</dt><dd>${command(c.entrypoint)}</dd>
  <dt>Cmd</dt><dd>${command(c.cmd)}</dd>
  ${c.workingDir && html`<dt>Working directory</dt><dd><code>${c.workingDir}</code></dd>`}
  ${c.user && html`<dt>User</dt><dd><code>${c.user}</code></dd>`}
  ${c.ports.length > 0 && html`<dt>Exposed ports</dt><dd>${c.ports.join(', ')}</dd>`}
</dl>
<h3>Environment</h3>
${c.env.length === 0 ? html`<p>None.</p>` : html`<ul class="plain env">${c.env.map((e) => html`<li><code>${e}</code></li>`)}</ul>`}
${pairsTable('Labels', c.labels, 'None.')}
<h3>History</h3>
${
  c.history.length === 0
    ? html`<p>None recorded.</p>`
    : html`<table class="list">
<caption class="sr-only">How the image was built, first step first</caption>
<thead><tr><th scope="col">Created</th><th scope="col">Step</th><th scope="col">Layer</th></tr></thead>
<tbody>${c.history.map(
        (h) => html`<tr><td>${h.created ? h.created.slice(0, 19).replace('T', ' ') : '—'}</td><td><code>${h.createdBy ?? ''}</code>${h.comment && html` <span class="muted">${h.comment}</span>`}</td><td>${h.emptyLayer ? 'none' : 'yes'}</td></tr>`,
      )}</tbody>
</table>`
}`;
}

/** A key/value table under its heading; `none` is said when there are no pairs (nothing at all when it is undefined). */
function pairsTable(title: string, pairs: Array<[string, string]>, none?: string): Html | '' {
  if (pairs.length === 0) return none ? html`<h3>${title}</h3><p>${none}</p>` : '';
  return html`<h3>${title}</h3><table class="list">
<caption class="sr-only">${title}</caption>
<thead><tr><th scope="col">Key</th><th scope="col">Value</th></tr></thead>
<tbody>${pairs.map(([k, v]) => html`<tr><td><code>${k}</code></td><td>${v}</td></tr>`)}</tbody>
</table>`;
}
