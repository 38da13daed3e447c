// The one place that maps registry things to storage keys, in the layout of
// distribution's registry/storage/paths.go, so that registry:2 and we can
// share a data directory. Callers pass validated names and parsed digests.

/**
 * A digest as keys need it. Storage sits below the registry and does not parse
 * digests: callers pass registry/digest.ts's parsed Digest, which is what keeps
 * "../" and friends out of keys.
 */
export interface Digest {
  readonly algorithm: string;
  readonly hex: string;
}

export const ROOT = '/docker/registry/v2';
export const REPOSITORIES = `${ROOT}/repositories`;
export const BLOBS = `${ROOT}/blobs`;

const repo = (name: string) => `${REPOSITORIES}/${name}`;

export const paths = {
  repositories: REPOSITORIES,
  repository: repo,
  blobs: BLOBS,
  blobAlgorithmDir: (algorithm: string) => `${BLOBS}/${algorithm}`,
  blobDir: (d: Digest) => `${BLOBS}/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`,
  blobData: (d: Digest) => `${BLOBS}/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}/data`,

  layersDir: (name: string) => `${repo(name)}/_layers`,
  layerLink: (name: string, d: Digest) => `${repo(name)}/_layers/${d.algorithm}/${d.hex}/link`,
  layerLinkDir: (name: string, d: Digest) => `${repo(name)}/_layers/${d.algorithm}/${d.hex}`,

  manifestsDir: (name: string) => `${repo(name)}/_manifests`,
  revisionsDir: (name: string) => `${repo(name)}/_manifests/revisions`,
  revisionLink: (name: string, d: Digest) => `${repo(name)}/_manifests/revisions/${d.algorithm}/${d.hex}/link`,
  revisionDir: (name: string, d: Digest) => `${repo(name)}/_manifests/revisions/${d.algorithm}/${d.hex}`,

  tagsDir: (name: string) => `${repo(name)}/_manifests/tags`,
  tagDir: (name: string, tag: string) => `${repo(name)}/_manifests/tags/${tag}`,
  tagCurrentLink: (name: string, tag: string) => `${repo(name)}/_manifests/tags/${tag}/current/link`,
  tagIndexLink: (name: string, tag: string, d: Digest) =>
    `${repo(name)}/_manifests/tags/${tag}/index/${d.algorithm}/${d.hex}/link`,

  // Not in distribution's layout: an index from a subject to the manifests that
  // refer to it (the referrers API). Distribution ignores directories it does
  // not know under _manifests, so the shared layout stays compatible.
  referrersDir: (name: string, subject: Digest) =>
    `${repo(name)}/_manifests/referrers/${subject.algorithm}/${subject.hex}`,
  referrerDir: (name: string, subject: Digest, referrer: Digest) =>
    `${repo(name)}/_manifests/referrers/${subject.algorithm}/${subject.hex}/${referrer.algorithm}/${referrer.hex}`,
  referrerLink: (name: string, subject: Digest, referrer: Digest) =>
    `${repo(name)}/_manifests/referrers/${subject.algorithm}/${subject.hex}/${referrer.algorithm}/${referrer.hex}/link`,

  uploadsDir: (name: string) => `${repo(name)}/_uploads`,
  uploadDir: (name: string, id: string) => `${repo(name)}/_uploads/${id}`,
  uploadData: (name: string, id: string) => `${repo(name)}/_uploads/${id}/data`,
  uploadStartedAt: (name: string, id: string) => `${repo(name)}/_uploads/${id}/startedat`,
};
