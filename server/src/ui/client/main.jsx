// The browser side of the UI: takes over the server-rendered lists where
// JavaScript runs (live search and paging of repositories; the tags table
// with copy-to-clipboard pull commands). Everything else, and these lists
// without JavaScript, is the server's HTML. No inline script: the CSP forbids it.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { formatSize, shortDigest } from '../format.ts';

const base = document.body.dataset.base ?? '/ui';

async function getJson(path) {
  const res = await fetch(`${base}${path}`, { headers: { accept: 'application/json' }, credentials: 'same-origin' });
  if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
  return res.json();
}

const repoUrl = (name) => `${base}/repo?${new URLSearchParams({ name })}`;
const imageUrl = (name, reference) => `${base}/image?${new URLSearchParams({ name, reference })}`;

function Repositories({ input, initial, mirror }) {
  const [q, setQ] = useState(initial);
  // Cursors of the pages before this one, for "Previous".
  const [cursors, setCursors] = useState([]);
  const [last, setLast] = useState(undefined);
  const [page, setPage] = useState(undefined);
  const [error, setError] = useState(undefined);

  useEffect(() => {
    let timer;
    const onInput = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        setCursors([]);
        setLast(undefined);
        setQ(input.value);
      }, 200);
    };
    input.addEventListener('input', onInput);
    return () => input.removeEventListener('input', onInput);
  }, [input]);

  useEffect(() => {
    let live = true;
    const params = new URLSearchParams({ n: '50', ...(q ? { q } : {}), ...(last ? { last } : {}) });
    getJson(`/api/repositories?${params}`).then(
      (p) => live && (setPage(p), setError(undefined)),
      (e) => live && setError(String(e.message)),
    );
    const url = new URL(location.href);
    if (q) url.searchParams.set('q', q);
    else url.searchParams.delete('q');
    url.searchParams.delete('last');
    history.replaceState(null, '', url);
    return () => {
      live = false;
    };
  }, [q, last]);

  if (error) return <p role="alert">Could not load the repositories: {error}</p>;
  if (!page) return <p role="status">Loading…</p>;
  return (
    <div>
      <p role="status" class="sr-only">{page.repositories.length} repositories shown</p>
      {page.repositories.length === 0 ? (
        <p>No repositories found.</p>
      ) : (
        <table class="list">
          <caption class="sr-only">Repositories</caption>
          <thead>
            <tr>
              <th scope="col">Repository</th>
              <th scope="col">Tags</th>
              <th scope="col">Size</th>
              <th scope="col">{mirror ? 'Last fetched' : 'Last push'}</th>
            </tr>
          </thead>
          <tbody>
            {page.repositories.map((r) => (
              <tr key={r.name}>
                <td>
                  <a href={repoUrl(r.name)}>{r.name}</a>
                </td>
                <td>{r.tags}</td>
                <td>
                  {r.partial ? 'over ' : ''}
                  {formatSize(r.size)}
                </td>
                <td>{r.lastPush ? <time dateTime={r.lastPush}>{r.lastPush.slice(0, 16).replace('T', ' ')}</time> : '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p class="pager">
        {cursors.length > 0 && (
          <button type="button" onClick={() => (setLast(cursors[cursors.length - 1]), setCursors(cursors.slice(0, -1)))}>
            Previous page
          </button>
        )}
        {page.next && (
          <button type="button" onClick={() => (setCursors([...cursors, last]), setLast(page.next))}>
            Next page
          </button>
        )}
      </p>
    </div>
  );
}

function pullCommands(host, name, tag) {
  const ref = `${host}/${name}:${tag}`;
  return [
    ['docker', `docker pull ${ref}`],
    ['podman', `podman pull ${ref}`],
    ['containerd', `ctr image pull ${ref}`],
  ];
}

function CopyButton({ text, label }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    await navigator.clipboard.writeText(text);
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  };
  return (
    <button type="button" class="copy" onClick={copy} aria-label={label} title={text}>
      {done ? 'Copied' : label.split(' ')[1]}
    </button>
  );
}

function Tags({ name, host, last }) {
  const [data, setData] = useState(undefined);
  const [error, setError] = useState(undefined);
  useEffect(() => {
    getJson(`/api/tags?${new URLSearchParams({ name, ...(last ? { last } : {}) })}`).then(setData, (e) => setError(String(e.message)));
  }, [name, last]);
  if (error) return <p role="alert">Could not load the tags: {error}</p>;
  if (!data) return <p role="status">Loading…</p>;
  if (data.tags.length === 0) return <p>No tags.</p>;
  const del = (reference) => `${base}/delete?${new URLSearchParams({ name, reference })}`;
  return (
    <div>
      <table class="list">
        <caption class="sr-only">
          Tags of {name}, {data.paged ? 'by name' : 'newest first'}
        </caption>
        <thead>
          <tr>
            <th scope="col">Tag</th>
            <th scope="col">Digest</th>
            <th scope="col">Size</th>
            <th scope="col">Created</th>
            <th scope="col">Platforms</th>
            <th scope="col">Pull</th>
            {data.canDelete && <th scope="col">Delete</th>}
          </tr>
        </thead>
        <tbody>
          {data.tags.map((t) => (
            <tr key={t.tag}>
              <td>
                <a href={imageUrl(name, t.digest)}>{t.tag}</a>
              </td>
              <td>
                <code title={t.digest}>{shortDigest(t.digest)}</code>
              </td>
              <td>{formatSize(t.size)}</td>
              <td>{t.created ? <time dateTime={t.created}>{t.created.slice(0, 19).replace('T', ' ')}</time> : '—'}</td>
              <td>
                {t.platforms.length === 0 ? (
                  '—'
                ) : (
                  <ul class="platforms">
                    {t.platforms.map((p) => (
                      <li key={p.digest}>
                        {t.index ? (
                          <a href={imageUrl(name, p.digest)}>{[p.os, p.architecture, p.variant].filter(Boolean).join('/')}</a>
                        ) : (
                          [p.os, p.architecture, p.variant].filter(Boolean).join('/')
                        )}
                      </li>
                    ))}
                  </ul>
                )}
              </td>
              <td class="pull">
                {pullCommands(host, name, t.tag).map(([tool, command]) => (
                  <CopyButton key={tool} text={command} label={`Copy ${tool} pull command for ${t.tag}`} />
                ))}
              </td>
              {data.canDelete && (
                <td>
                  <a href={del(t.tag)}>
                    Delete tag<span class="sr-only"> {t.tag}</span>
                  </a>{' '}
                  ·{' '}
                  <a href={del(t.digest)}>
                    Delete manifest<span class="sr-only"> of {t.tag}</span>
                  </a>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {data.paged && (
        <p class="pager">
          {last && <a href={repoUrl(name)}>First tags</a>}
          {data.next && (
            <>
              {' '}
              <a href={`${repoUrl(name)}&${new URLSearchParams({ last: data.next })}`} rel="next">
                Next tags
              </a>{' '}
              ({data.omitted} more)
            </>
          )}
        </p>
      )}
    </div>
  );
}

const repos = document.getElementById('repositories');
const q = document.getElementById('q');
if (repos && q) {
  repos.textContent = '';
  render(<Repositories input={q} initial={repos.dataset.q ?? ''} mirror={repos.dataset.mirror === 'true'} />, repos);
}
const tags = document.getElementById('tags');
if (tags?.dataset.name) {
  const { name, host, last } = tags.dataset;
  tags.textContent = '';
  render(<Tags name={name} host={host} last={last || undefined} />, tags);
}

// The status pages (mirror, operations): the server renders them; this fetches the page again now and then and
// swaps in its live part when it changed. Not while the page is hidden, nor while focus is inside it (a swap
// would lose it).
const live = document.getElementById('live');
if (live?.dataset.refresh) {
  const every = Number(live.dataset.refresh) * 1000;
  let shown = live.innerHTML;
  const refresh = async () => {
    if (document.visibilityState === 'visible' && !live.contains(document.activeElement)) {
      try {
        const res = await fetch(location.href, { credentials: 'same-origin', headers: { accept: 'text/html' } });
        const next = res.ok && new DOMParser().parseFromString(await res.text(), 'text/html').getElementById('live');
        if (next && next.innerHTML !== shown) {
          shown = next.innerHTML;
          live.replaceChildren(...next.childNodes);
        }
      } catch {
        // The next round tries again.
      }
    }
    setTimeout(refresh, every);
  };
  setTimeout(refresh, every);
}
