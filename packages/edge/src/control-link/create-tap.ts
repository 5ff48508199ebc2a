// Reads the envd access token out of a Create the control link forwards, so the edge can later tell whether a
// request on a paused private sandbox's envd port carries that sandbox's own X-Access-Token before it asks the
// control plane to wake it (traffic/sandbox-router.ts). The link still forwards the bytes untouched; this only
// watches them, up to a bound, and gives up (undefined) on anything it does not fully understand.

import { fromBinary } from '@bufbuild/protobuf';
import { CreateRequestSchema } from '@cove/contracts/orchestrator';
import { tokenHash } from '@cove/auth-tokens';

/** A Create is a spec of a few KiB; a bigger body is not decoded. */
const MAX_TAPPED_BYTES = 1024 * 1024;

/** Collects a Create request body as it streams past. */
export class CreateTap {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private overflow = false;

  constructor(private readonly contentType: string | undefined) {}

  push(chunk: Buffer): void {
    if (this.overflow) return;
    this.size += chunk.length;
    if (this.size > MAX_TAPPED_BYTES) {
      this.overflow = true;
      this.chunks.length = 0;
      return;
    }
    this.chunks.push(chunk);
  }

  /** sha256 of the spec's envd access token; undefined when there is none or the body could not be read. */
  envdTokenHash(): string | undefined {
    if (this.overflow) return undefined;
    const body = Buffer.concat(this.chunks);
    const type = (this.contentType ?? '').toLowerCase();
    let message: Buffer;
    if (type === 'application/grpc' || type.startsWith('application/grpc+proto')) {
      // One length-prefixed message; flag 1 = compressed, which the control plane does not use: give up.
      if (body.length < 5 || body[0] !== 0) return undefined;
      const length = body.readUInt32BE(1);
      if (body.length !== 5 + length) return undefined;
      message = body.subarray(5);
    } else if (type === 'application/proto') {
      message = body;
    } else {
      return undefined;
    }
    try {
      const token = fromBinary(CreateRequestSchema, message).sandbox?.envdAccessToken ?? '';
      return token === '' ? undefined : tokenHash(token);
    } catch {
      return undefined;
    }
  }
}
