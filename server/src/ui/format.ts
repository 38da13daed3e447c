// How sizes and digests read in the UI, shared by the server's pages and the
// browser's script (esbuild bundles this file into the client): so it may
// import nothing, least of all from the server.

/** 1536 → "1.5 KB" (powers of 1024, as docker and the registry's other outputs say it). */
export function formatSize(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** sha256:0123456789ab…: enough to tell digests apart on a page; the full one goes in a title. */
export function shortDigest(digest: string): string {
  const [alg, hex] = digest.split(':');
  return `${alg}:${(hex ?? '').slice(0, 12)}`;
}
