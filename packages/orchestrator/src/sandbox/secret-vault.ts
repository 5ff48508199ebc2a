// E2B's Secret values on the node (docs/network-policy.md, "Secrets"): the egress proxy asks for one when a request
// matching a rule needs `${e2b.secrets.<name>}`. The value is read from cluster storage, where the control plane
// stored it sealed to the cluster's key, and opened with that key (derived here from the artifact key). The blob
// is storage content, so it is read bounded and must open for exactly this team and name; anything else fails the
// request closed. Opened values are held a moment (a burst of requests reads storage once), never written.

import { clusterSecretKeys, openSecret, MAX_SEALED_SECRET_BYTES, secretNameKey, canonicalSecretName, secretNameProblem } from '@cove/egress';
import { secretKey, type BlobStore } from '@cove/storage';
import type { KeyObject } from 'node:crypto';

/** How long an opened value is reused: an update or destroy is in force for new requests after this. */
const CACHE_MS = 1000;
const MAX_CACHED = 1024;

export class SecretVault {
  private readonly privateKey: KeyObject;
  readonly publicKey: string;
  private readonly cache = new Map<string, { value: string; until: number }>();

  constructor(
    private readonly store: Pick<BlobStore, 'get'>,
    clusterKey: string,
  ) {
    const k = clusterSecretKeys(clusterKey);
    this.privateKey = k.privateKey;
    this.publicKey = k.publicKey;
  }

  /** The current value of the team's secret `name`; throws (the proxy answers 502) when it cannot be had. */
  async resolve(teamId: string, name: string): Promise<string> {
    if (secretNameProblem(name)) throw new Error('not a secret name');
    const canonical = canonicalSecretName(name);
    const id = `${teamId}\n${canonical}`;
    const hit = this.cache.get(id);
    if (hit && hit.until > Date.now()) return hit.value;
    const blob = await this.read(secretKey(teamId, secretNameKey(canonical)));
    const { value } = openSecret(this.privateKey, teamId, canonical, blob);
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
    this.cache.set(id, { value, until: Date.now() + CACHE_MS });
    return value;
  }

  private async read(key: string): Promise<string> {
    const stream = await this.store.get(key);
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const c of stream as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > MAX_SEALED_SECRET_BYTES) throw new Error('sealed secret too large');
        chunks.push(c);
      }
    } finally {
      stream.destroy();
    }
    return Buffer.concat(chunks).toString('utf8');
  }
}
