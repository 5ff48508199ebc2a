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

  it('re-parses the egress rules it is sent: CIDRs and hostnames normalised, garbage refused', () => {
    const base = { sandboxId: 'abc-1', templateId: 'base', vcpu: 1, memoryMb: 512, diskMb: 1024, endTime: timestampFromMs(NOW + 1000) };
    const v = validateSpec(create(SandboxSpecSchema, { ...base, egress: { allowOut: ['203.0.113.7/24'], denyOut: ['0.0.0.0/0'] } }), NODE, NOW);
    assert.deepEqual(v.egress, { allowOut: ['203.0.113.0/24'], denyOut: ['0.0.0.0/0'] });
    const h = validateSpec(create(SandboxSpecSchema, { ...base, egress: { allowOut: ['Example.COM.', '*.Api.example.com', '10.1.2.3/8'], denyOut: ['0.0.0.0/0'] } }), NODE, NOW);
    assert.deepEqual(h.egress, { allowOut: ['10.0.0.0/8', 'example.com', '*.api.example.com'], denyOut: ['0.0.0.0/0'] });
    assert.throws(
      () => validateSpec(create(SandboxSpecSchema, { ...base, egress: { allowOut: ['exa mple.com', '1.2.3.4/40'], denyOut: ['x; drop'] } }), NODE, NOW),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgument);
        assert.ok(err.violations.some((x) => x.startsWith('egress.allowOut')), err.violations.join('; '));
        assert.ok(err.violations.some((x) => x.startsWith('egress.denyOut[0]')), err.violations.join('; '));
        return true;
      },
    );
  });

  it('checks volume mounts again on the node: ids name images, paths stay out of reserved and overlapping places', () => {
    const base = { sandboxId: 'abc-1', templateId: 'base', vcpu: 1, memoryMb: 512, diskMb: 1024, endTime: timestampFromMs(NOW + 1000) };
    const id = '0b7c4a52-1f0e-4c5b-9a55-3f2b1f0c9e11';
    const ok = validateSpec(create(SandboxSpecSchema, { ...base, volumeMounts: [{ volumeId: id, path: '/data', quotaBytes: 64n << 20n }] }), NODE, NOW);
    assert.deepEqual(ok.volumes, [{ volumeId: id, path: '/data', quotaBytes: 64 * 1024 * 1024 }]);
    const bad = [
      { volumeId: '../../etc/passwd', path: '/a', quotaBytes: 64n << 20n },
      { volumeId: id.toUpperCase(), path: '/b', quotaBytes: 64n << 20n },
      { volumeId: '1b7c4a52-1f0e-4c5b-9a55-3f2b1f0c9e11', path: '/proc/sys', quotaBytes: 64n << 20n },
      { volumeId: '2b7c4a52-1f0e-4c5b-9a55-3f2b1f0c9e11', path: '/x/../opt/cove', quotaBytes: 64n << 20n },
      { volumeId: '3b7c4a52-1f0e-4c5b-9a55-3f2b1f0c9e11', path: '/c', quotaBytes: 1n },
      { volumeId: '4b7c4a52-1f0e-4c5b-9a55-3f2b1f0c9e11', path: '/d,ro', quotaBytes: 64n << 20n },
      { volumeId: '5b7c4a52-1f0e-4c5b-9a55-3f2b1f0c9e11', path: '/c/inner', quotaBytes: 64n << 20n },
    ];
    assert.throws(
      () => validateSpec(create(SandboxSpecSchema, { ...base, volumeMounts: bad }), NODE, NOW),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgument);
        const fields = err.violations.map((v) => v.split(':')[0]);
        assert.deepEqual(fields, [
          'volume_mounts[0].volume_id',
          'volume_mounts[1].volume_id',
          'volume_mounts[2].path',
          'volume_mounts[3].path',
          'volume_mounts[4].quota_bytes',
          'volume_mounts[5].path',
          'volume_mounts[6].path',
        ]);
        return true;
      },
    );
    assert.throws(
      () => validateSpec(create(SandboxSpecSchema, { ...base, snapshotId: 'snap-1', volumeMounts: [{ volumeId: id, path: '/data', quotaBytes: 64n << 20n }] }), NODE, NOW),
      (err: unknown) => err instanceof InvalidArgument && err.violations.includes('volume_mounts: not with snapshot_id'),
    );
  });

  it('re-parses rules and maskRequestHost: normalised, and a header a sender could smuggle CRLF into is refused', () => {
    const base = { sandboxId: 'abc-1', templateId: 'base', vcpu: 1, memoryMb: 512, diskMb: 1024, endTime: timestampFromMs(NOW + 1000) };
    const ok = validateSpec(create(SandboxSpecSchema, {
      ...base,
      maskRequestHost: 'localhost:${PORT}',
      egress: { rules: [{ host: 'API.Example.com', transforms: [{ setHeaders: [{ name: 'X-Key', value: 'v' }] }] }] },
    }), NODE, NOW);
    assert.deepEqual(ok.egress.rules, [{ host: 'api.example.com', transforms: [{ setHeaders: [{ name: 'x-key', value: 'v' }] }] }]);
    assert.equal(ok.maskRequestHost, 'localhost:${PORT}');
    assert.throws(
      () => validateSpec(create(SandboxSpecSchema, {
        ...base,
        maskRequestHost: 'a/b',
        egress: { rules: [{ host: '*', transforms: [{ setHeaders: [{ name: 'x-key', value: 'v\r\nx-evil: 1' }] }] }] },
      }), NODE, NOW),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgument);
        assert.ok(err.violations.some((x) => x.startsWith('egress.rules')), err.violations.join('; '));
        assert.ok(err.violations.some((x) => x.startsWith('mask_request_host')), err.violations.join('; '));
        return true;
      },
    );
  });
});
