/**
 * The envd protocol version this daemon implements. The E2B SDK gates features on it
 * (metadata 0.6.2, watch entries 0.6.3, network-mount watch 0.6.4), so it is reported on
 * `/health` and `/init` and must be what the control plane records as `envdVersion`.
 */
export const ENVD_VERSION = '0.6.4';
