// The traffic port's Prometheus metrics, in the edge's one registry (served at `GET /metrics` on the API port):
// auto-resume calls and the requests waiting on them, and requests whose client left before they could be
// forwarded. What an operator needs to see a slow or failing resume path; no sandbox id becomes a label.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export class TrafficMetrics {
  /** Resume calls to the control plane by outcome (`resumed`, `not_found`, `denied`, …). */
  readonly resumeCalls: Counter<'outcome'>;
  readonly resumeDuration: Histogram<'outcome'>;
  /** Traffic requests waiting now for a resume, their own call or one they joined. */
  readonly resumeWaiting: Gauge;
  /** Requests routed but not forwarded: the client had gone (typically while a resume ran). */
  readonly clientGone: Counter;

  constructor(registry: Registry) {
    const registers = [registry];
    this.resumeCalls = new Counter({ name: 'cove_edge_resume_calls_total', help: 'Auto-resume calls to the control plane by outcome', labelNames: ['outcome'] as const, registers });
    this.resumeDuration = new Histogram({
      name: 'cove_edge_resume_duration_seconds',
      help: 'Auto-resume call duration by outcome',
      labelNames: ['outcome'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.resumeWaiting = new Gauge({ name: 'cove_edge_resume_waiting_requests', help: 'Traffic requests waiting for a sandbox to be resumed', registers });
    this.clientGone = new Counter({ name: 'cove_edge_traffic_client_gone_total', help: 'Traffic requests not forwarded because the client left first', registers });
  }
}
