// The `metadata` list filter. The SDK encodes it twice (e2b-sdk.md §2.1): each key and value is URL-encoded,
// joined as a query string, and the whole string is URL-encoded again as one parameter. The query parser has
// undone the outer layer; this undoes the query string and then each key/value once more.

import { BadRequest } from '../errors.js';

export function decodeMetadataFilter(param: string | undefined): Record<string, string> | undefined {
  if (param === undefined || param === '') return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(param)) {
    try {
      out[decodeURIComponent(k)] = decodeURIComponent(v);
    } catch {
      throw new BadRequest('metadata filter is not valid URL encoding');
    }
  }
  return out;
}
