// Docker-style image references, normalised the way `docker pull` does it, so `debian:bookworm` and
// `docker.io/library/debian:bookworm` name the same repository in the cluster registry.

import { InvalidImageRef } from './errors.js';

export interface ImageRef {
  /** Repository path in the registry, e.g. `library/debian`. */
  repository: string;
  /** A tag (`bookworm`) or a digest (`sha256:…`); a digest wins when both were given. */
  reference: string;
  /** Whether `reference` is a digest. */
  isDigest: boolean;
  /** The tag, when one was given (or defaulted to `latest`), even alongside a digest. */
  tag?: string;
}

const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);
// Grammar of github.com/distribution/reference (path components, tags, digests).
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const DOMAIN = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$/;

/**
 * Parses `[domain/]path[:tag][@digest]`. Docker Hub's domains are dropped and single-component names get
 * `library/`; any other domain stays as the first path component (the cluster registry mirrors every image under
 * one name space), which is why a domain with a port is refused. The default tag is `latest`.
 */
export function parseImageRef(input: string): ImageRef {
  const bad = (reason: string): never => {
    throw new InvalidImageRef(input, reason);
  };
  if (typeof input !== 'string' || input.trim() === '') bad('empty');
  const ref = input.trim();
  if (ref.length > 512) bad('too long');
  if (/\s/.test(ref)) bad('contains whitespace');

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) bad('digest must be sha256: followed by 64 lowercase hex digits');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) bad(`bad tag ${JSON.stringify(tag)}`);
  }
  if (rest === '') bad('no repository name');

  const parts = rest.split('/');
  const first = parts[0];
  const hasDomain = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  let path = parts;
  if (hasDomain) {
    if (!DOMAIN.test(first)) bad(`bad registry host ${JSON.stringify(first)}`);
    const domain = first.toLowerCase();
    if (DOCKER_HUB.has(domain)) path = parts.slice(1);
    else if (domain.includes(':')) bad('a registry host with a port cannot be mirrored in the cluster registry');
    else path = [domain, ...parts.slice(1)];
  }
  if (path.length === 0) bad('no repository name');
  for (const c of path) {
    if (c !== c.toLowerCase()) bad('repository name must be lowercase');
    if (!COMPONENT.test(c)) bad(`bad path component ${JSON.stringify(c)}`);
  }
  if (path.length === 1 && (!hasDomain || DOCKER_HUB.has(first.toLowerCase()))) path = ['library', ...path];
  const repository = path.join('/');
  if (repository.length > 255) bad('repository name longer than 255 characters');
  if (!digest && !tag) tag = 'latest';
  return { repository, reference: digest ?? tag!, isDigest: digest !== undefined, ...(tag !== undefined ? { tag } : {}) };
}

/** `repository:tag` or `repository@digest`, for messages. */
export function formatImageRef(r: Pick<ImageRef, 'repository' | 'reference' | 'isDigest'>): string {
  return `${r.repository}${r.isDigest ? '@' : ':'}${r.reference}`;
}
