// One string picks the storage backend, so every component (and `cove up`) configures storage the same way:
//   file:///var/lib/cove/storage
//   s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&pathStyle=true
// Credentials never travel in the URL (it ends up in logs and process listings); they come from explicit
// options, or, when absent, from the AWS SDK's default provider chain.

import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { BlobStore } from './blob-store.js';
import { InvalidStorageConfig } from './errors.js';
import { checkKey } from './keys.js';
import { LocalBlobStore } from './local-store.js';
import { S3BlobStore, type S3Credentials } from './s3-store.js';

/** Local-directory backend. */
export interface LocalStorageConfig {
  driver: 'local';
  root: string;
}

/** S3-protocol backend. */
export interface S3StorageConfig {
  driver: 's3';
  bucket: string;
  prefix: string;
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  credentials?: S3Credentials;
}

/** A parsed storage location. */
export type StorageConfig = LocalStorageConfig | S3StorageConfig;

/** Values that do not belong in the URL. */
export interface StorageConfigOptions {
  credentials?: S3Credentials;
}

const S3_PARAMS = new Set(['endpoint', 'region', 'pathStyle']);

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return '\0';
  }
}

/** Parses a storage URL; throws InvalidStorageConfig listing every problem found. */
export function parseStorageUrl(input: string, options: StorageConfigOptions = {}): StorageConfig {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new InvalidStorageConfig([`not a URL: ${JSON.stringify(input)}`]);
  }
  const issues: string[] = [];
  if (url.protocol === 'file:') {
    if (url.host !== '' && url.host !== 'localhost') issues.push('file URL must not name a host');
    if (url.search !== '' || url.hash !== '') issues.push('file URL takes no query or fragment');
    const root = url.host === '' || url.host === 'localhost' ? fileURLToPath(`file://${url.pathname}`) : '';
    if (issues.length === 0 && (!isAbsolute(root) || root === '/')) issues.push('file URL needs a directory');
    if (issues.length > 0) throw new InvalidStorageConfig(issues);
    return { driver: 'local', root: root.length > 1 && root.endsWith('/') ? root.slice(0, -1) : root };
  }
  if (url.protocol !== 's3:') throw new InvalidStorageConfig([`unsupported scheme ${url.protocol}`]);

  const bucket = url.hostname;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) issues.push(`bad bucket name ${JSON.stringify(bucket)}`);
  if (url.username !== '' || url.password !== '') issues.push('credentials must not be put in the URL');
  if (url.port !== '') issues.push('put the port in the endpoint parameter, not the s3 URL');
  for (const name of url.searchParams.keys()) if (!S3_PARAMS.has(name)) issues.push(`unknown parameter ${name}`);
  let prefix = safeDecode(url.pathname.replace(/^\/+/, ''));
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  try {
    if (prefix !== '') checkKey(prefix.slice(0, -1));
  } catch {
    issues.push('bad prefix');
  }
  const endpoint = url.searchParams.get('endpoint') ?? undefined;
  if (endpoint !== undefined) {
    try {
      const e = new URL(endpoint);
      if (e.protocol !== 'http:' && e.protocol !== 'https:') issues.push('endpoint must be http or https');
    } catch {
      issues.push('endpoint is not a URL');
    }
  }
  const pathStyle = url.searchParams.get('pathStyle');
  if (pathStyle !== null && pathStyle !== 'true' && pathStyle !== 'false') issues.push('pathStyle must be true or false');
  const region = url.searchParams.get('region') ?? 'us-east-1';
  if (!/^[a-z0-9-]+$/.test(region)) issues.push('bad region');
  if (issues.length > 0) throw new InvalidStorageConfig(issues);
  return {
    driver: 's3',
    bucket,
    prefix,
    region,
    forcePathStyle: pathStyle === 'true',
    ...(endpoint !== undefined ? { endpoint } : {}),
    ...(options.credentials !== undefined ? { credentials: options.credentials } : {}),
  };
}

/** Builds the store a parsed config describes. */
export function createBlobStore(config: StorageConfig, deps: { logger: Logger; spoolDir?: string }): BlobStore {
  if (config.driver === 'local') return new LocalBlobStore({ root: config.root, logger: deps.logger });
  return new S3BlobStore({
    bucket: config.bucket,
    prefix: config.prefix,
    region: config.region,
    forcePathStyle: config.forcePathStyle,
    logger: deps.logger,
    ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
    ...(config.credentials !== undefined ? { credentials: config.credentials } : {}),
    ...(deps.spoolDir !== undefined ? { spoolDir: deps.spoolDir } : {}),
  });
}
