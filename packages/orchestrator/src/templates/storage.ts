// The cluster's blob store (docs/template-builds.md, "Cluster storage layout"), opened from the node's config:
// a local directory (single host, `cove up`) or an S3-protocol bucket shared by every node.

import { join } from 'node:path';
import { createBlobStore, parseStorageUrl, type BlobStore } from '@cove/storage';
import type { Logger } from 'pino';

export interface StorageSettings {
  /** `file:///dir` or `s3://bucket/prefix?endpoint=…&region=…&pathStyle=true`. */
  url: string;
  /** S3 keys; absent = the AWS SDK's default provider chain. */
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
}

/** Opens the store; `spoolDir` (under the data dir) holds S3 uploads being staged. */
export function openClusterStorage(s: StorageSettings, deps: { dataDir: string; logger: Logger }): BlobStore {
  const credentials =
    s.accessKeyId && s.secretAccessKey ? { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey } : undefined;
  const config = parseStorageUrl(s.url, credentials ? { credentials } : {});
  return createBlobStore(config, { logger: deps.logger, spoolDir: join(deps.dataDir, 'spool') });
}
