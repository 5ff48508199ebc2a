// The outbound-only control link's handshake (docs/operating.md, "Outbound-only clusters"): the edge sends
// `GET LINK_PATH` with `Upgrade: LINK_PROTOCOL`, `authorization: Bearer <cluster token>` and `EDGE_ID_HEADER`;
// after the control plane's 101 the connection carries HTTP/2 with the control plane as the client.

export const LINK_PATH = '/cluster/v1/link';
export const LINK_PROTOCOL = 'cove-control-link/1';
export const EDGE_ID_HEADER = 'cove-edge-id';
/** An edge's id on the link: printable, bounded (the control plane keeps one link per edge id). */
export const EDGE_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
/** A cluster registered with an endpoint of this scheme (`outbound://<label>`) is reached only over its links. */
export const OUTBOUND_SCHEME = 'outbound:';
