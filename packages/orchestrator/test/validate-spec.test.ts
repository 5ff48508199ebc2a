import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { SandboxSpecSchema } from '@cove/contracts/orchestrator';
import { InvalidArgument } from '../src/errors.js';
import { validateSpec } from '../src/sandboxes/validate-spec.js';

const NODE = { cpuCount: 4, memoryMb: 8192 };
const NOW = 1_800_000_000_000;

describe('validateSpec', () => {
  it('accepts a good spec and converts it', () => {
    const v = validateSpec(
      create(SandboxSpecSchema, {
        sandboxId: 'abc-1',
        templateId: 'base',
        vcpu: 2,
        memoryMb: 512,
        diskMb: 1024,
        envVars: { A_B: '1' },
        startTime: timestampFromMs(NOW),
        endTime: timestampFromMs(NOW + 1000),
      }),
      NODE,
      NOW,
    );
    assert.equal(v.endTime, NOW + 1000);
    assert.deepEqual(v.envVars, { A_B: '1' });
  });

  it('reports every bad field at once', () => {
    assert.throws(
      () => validateSpec(create(SandboxSpecSchema, { sandboxId: 'X', envVars: { 'a=b': 'x' } }), NODE, NOW),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgument);
        const fields = new Set(err.violations.map((v) => v.split(':')[0]));
        assert.deepEqual([...fields].sort(), ['disk_mb', 'end_time', 'env_vars', 'memory_mb', 'sandbox_id', 'template_id', 'vcpu']);
        return true;
      },
    );
  });
});
