/** Percentile (nearest-rank) of a sample, in the sample's unit. */
export function percentile(sample: number[], p: number): number {
  if (sample.length === 0) return NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** The same figure measured in the same run under a reference condition, and what that condition is. */
export interface Baseline {
  value: number;
  label: string;
}

/** Report one figure to `cove bench` (which collects these lines) and to a human reading along. */
export function report(name: string, value: number, unit: string, target?: string, baseline?: Baseline): void {
  const base = baseline ? { baseline: baseline.value, baselineLabel: baseline.label } : {};
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ name, value, unit, target, ...base })}\n`);
}

/** A line for the human reading along (`cove bench` prints what is not a BENCH_RESULT line). */
export const say = (line: string): void => void process.stdout.write(`${line}\n`);
