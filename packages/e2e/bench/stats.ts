/** Percentile (nearest-rank) of a sample, in the sample's unit. */
export function percentile(sample: number[], p: number): number {
  if (sample.length === 0) return NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** Report one figure to `cove bench` (which collects these lines) and to a human reading along. */
export function report(name: string, value: number, unit: string, target?: string): void {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, target })}\n`);
}
