// Each node's own credential (docs/decisions.md, "Node credentials"): the edge holds COVE_NODE_CREDENTIAL_KEY
// and derives node X's token as HMAC-SHA256(key, "cove-node:" + X). A heartbeat is accepted only with the token
// of the node id it claims, and the edge calls node X (RPC, node proxy) only with X's token, so a node that
// leaks or abuses its token can speak for itself alone.

import { deriveNodeToken, tokensEqual } from '@cove/auth-tokens';

/** Node tokens derived from the cluster's node-credential key. */
export class NodeCredentials {
  private readonly cache = new Map<string, string>();

  constructor(private readonly key: string) {}

  /** The token node `nodeId` holds and accepts. */
  tokenFor(nodeId: string): string {
    let token = this.cache.get(nodeId);
    if (token === undefined) {
      token = deriveNodeToken(this.key, nodeId);
      // Node ids come from authenticated heartbeats and the registry; the bound keeps a flood of made-up ids cheap.
      if (this.cache.size >= 4096) this.cache.clear();
      this.cache.set(nodeId, token);
    }
    return token;
  }

  /** True when `given` is node `nodeId`'s token (constant time). */
  verify(nodeId: string, given: string): boolean {
    return tokensEqual(given, this.tokenFor(nodeId));
  }
}
