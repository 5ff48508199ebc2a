// docs/metrics-out.schema.json is generated from the one definition, the strict zod ClusterMetricsReport
// (`npm run gen:schema -w @cove/collector`); a test fails when the committed file drifts from it.

import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClusterMetricsReport } from '@cove/contracts/telemetry';
import { zodToJsonSchema } from 'zod-to-json-schema';

export function metricsOutJsonSchema(): string {
  const { $schema, ...body } = zodToJsonSchema(ClusterMetricsReport, { target: 'jsonSchema7', $refStrategy: 'none' }) as Record<string, unknown>;
  const schema = {
    $schema,
    title: 'Cove anonymized cluster metrics report (POST /cluster/v1/metrics)',
    description:
      'Everything a cluster may tell the control plane about itself. Generated from ClusterMetricsReport in packages/contracts/src/telemetry/index.ts; unknown properties are refused.',
    ...body,
  };
  return JSON.stringify(schema, null, 2) + '\n';
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2];
  if (!out) throw new Error('usage: metrics-out-schema.js <output file>');
  writeFileSync(out, metricsOutJsonSchema());
}
