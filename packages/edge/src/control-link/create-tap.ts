// Reads what the edge keeps of a Create the control link forwards: from the request, the envd access token (so
// the edge can later tell whether a request on a paused private sandbox's envd port carries that sandbox's own
// X-Access-Token before it asks the control plane to wake it, traffic/sandbox-router.ts) and whether the
// sandbox's Host is masked; from the node's answer, the sandbox's address (the traffic port's one-hop route,
// traffic/haproxy/route-maps.ts). The link still forwards the bytes untouched; this only watches them, up to a
// bound, and gives up (undefined) on anything it does not fully understand.

import { isIP } from 'node:net';
import { fromBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { CreateRequestSchema, CreateResponseSchema } from '@cove/contracts/orchestrator';
import { tokenHash } from '@cove/auth-tokens';

/** A Create and its answer are a few KiB; a bigger body is not decoded. */
const MAX_TAPPED_BYTES = 1024 * 1024;

/** Collects one body (request or response) as it streams past, up to the bound. */
class BodyTap {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private overflow = false;
  contentType: string | undefined;

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

  /** The body as one message of `schema` (gRPC framing or Connect's unary proto), or undefined. */
  decode<Desc extends DescMessage>(schema: Desc): MessageShape<Desc> | undefined {
    if (this.overflow) return undefined;
    const body = Buffer.concat(this.chunks);
    const type = (this.contentType ?? '').toLowerCase();
    let message: Buffer;
    if (type === 'application/grpc' || type.startsWith('application/grpc+proto')) {
      // One length-prefixed message; flag 1 = compressed, which neither side uses: give up.
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
      return fromBinary(schema, message);
    } catch {
      return undefined;
    }
  }
}

/** Watches a Create request and the node's answer. */
export class CreateTap {
  readonly request = new BodyTap();
  readonly response = new BodyTap();

  constructor(requestContentType: string | undefined) {
    this.request.contentType = requestContentType;
  }

  /** sha256 of the spec's envd access token; undefined when there is none or the body could not be read. */
  envdTokenHash(): string | undefined {
    const token = this.request.decode(CreateRequestSchema)?.sandbox?.envdAccessToken ?? '';
    return token === '' ? undefined : tokenHash(token);
  }

  /**
   * What the one-hop route needs: the sandbox's IPv4 address from the answer, and whether its Host is masked
   * (read from the request: only the node proxy applies a mask). Undefined when either body could not be read.
   */
  directRoute(): { address: string; hostMasked: boolean } | undefined {
    const spec = this.request.decode(CreateRequestSchema)?.sandbox;
    const address = this.response.decode(CreateResponseSchema)?.sandbox?.address ?? '';
    if (!spec || isIP(address) !== 4) return undefined;
    return { address, hostMasked: spec.maskRequestHost !== '' };
  }
}
