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

// The control plane's calls to a node's SandboxService, through the edge (edge/src/control-link).
/** The node a control-plane call is for; the edge forwards the call to that node's RPC URL. */
export const NODE_ID_HEADER = 'cove-node-id';
/**
 * A node's structured error code (its `OrchestratorError` code, e.g. `template_not_ready`, `snapshot_restore_failed`)
 * on a failed call, beside the Connect code, so a caller tells failures of one Connect code apart without reading
 * the message.
 */
export const NODE_ERROR_CODE_HEADER = 'cove-error-code';
/**
 * The sandbox a Create, Pause or Delete is for: the edge keeps its catalog from it without reading the call's body
 * (the edge forwards the HTTP/2 stream to the node verbatim).
 */
export const LINK_SANDBOX_ID_HEADER = 'cove-sandbox-id';
/**
 * A private sandbox's traffic access token on its Create (edge.proto SandboxTraffic): the edge keeps its hash for
 * the traffic port, the node keeps its own for the node proxy.
 */
export const LINK_TRAFFIC_TOKEN_HEADER = 'cove-traffic-access-token';
/** The node's code for a snapshot whose processes it could not restore (ABORTED): another node may. */
export const NODE_RESTORE_FAILED = 'snapshot_restore_failed';
