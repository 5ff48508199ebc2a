// The published schema is the zod schema: the committed docs/metrics-out.schema.json must be what the generator
// writes now, and it must refuse an unknown property the way the zod schema does.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { metricsOutJsonSchema } from '../src/metrics-out-schema.js';

const committed = readFileSync(new URL('../../../../docs/metrics-out.schema.json', import.meta.url), 'utf8');

test('docs/metrics-out.schema.json is generated from ClusterMetricsReport (run npm run gen:schema -w @cove/collector)', () => {
  assert.equal(committed, metricsOutJsonSchema());
});

test('every object in the published schema refuses unknown properties', () => {
  const walk = (node: unknown, path: string): void => {
    if (!node || typeof node !== 'object') return;
    const o = node as Record<string, unknown>;
    if (o.type === 'object') assert.equal(o.additionalProperties, false, `${path} allows unknown properties`);
    for (const [k, v] of Object.entries(o)) walk(v, `${path}.${k}`);
  };
  walk(JSON.parse(committed), '$');
});
