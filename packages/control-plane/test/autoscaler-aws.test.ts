// The AWS Auto Scaling group provider against a stand-in for the Auto Scaling API, a real HTTP server speaking its
// Query protocol (form-encoded `Action=…`, XML answers) at the provider's endpoint: the exact calls it makes, that
// each is signed (SigV4, credentials from the standard chain's environment), that throttling is retried and
// persistent failures surface as structured errors, and that it never terminates what is not the group's.

import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { AutoScalingStandIn } from '@cove/test-support/aws-autoscaling-stand-in';
import { AwsAutoScalingGroupProvider, ProviderError } from '../src/autoscaler/provider.js';

const GROUP = 'cove-orchestrators';

const A = 'i-0123456789abcdef0';
const B = 'i-0fedcba9876543210';
const stand = new AutoScalingStandIn(GROUP);
const saved = { ...process.env };
let provider: AwsAutoScalingGroupProvider;

const rejectsWith = async (p: Promise<unknown>, code: string, extra: (e: ProviderError) => boolean = () => true) =>
  assert.rejects(p, (err: unknown) => err instanceof ProviderError && err.code === code && extra(err));

describe('AWS Auto Scaling group provider', () => {
  before(async () => {
    await stand.start();
    // The standard chain, through its first link: the environment (and no instance metadata to wait for).
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIDSTANDIN', AWS_SECRET_ACCESS_KEY: 'stand-in-secret', AWS_REGION: 'eu-west-1', AWS_EC2_METADATA_DISABLED: 'true' });
    delete process.env.AWS_PROFILE;
    delete process.env.AWS_SESSION_TOKEN;
    provider = new AwsAutoScalingGroupProvider({ autoScalingGroupName: GROUP, endpoint: stand.url, launchWaitMs: 5_000, pollMs: 50 });
  });
  after(async () => {
    provider.destroy();
    await stand.stop();
    process.env = saved;
  });
  beforeEach(() => {
    stand.calls = [];
    stand.faults = [];
    stand.group = {
      exists: true,
      desired: 3,
      max: 4,
      instances: [
        { id: A, state: 'InService' },
        { id: B, state: 'Pending' },
        { id: 'i-0aaaaaaaaaaaaaaaa', state: 'Terminating:Wait' },
      ],
    };
  });

  test('list describes the group, signed with SigV4 from the standard chain; leaving instances are not nodes', async () => {
    assert.deepEqual(await provider.list(), [
      { nodeId: A, handle: A },
      { nodeId: B, handle: B },
    ]);
    assert.equal(stand.calls.length, 1);
    const [c] = stand.calls;
    assert.equal(c!.action, 'DescribeAutoScalingGroups');
    assert.equal(c!.params.Version, '2011-01-01');
    assert.equal(c!.params['AutoScalingGroupNames.member.1'], GROUP);
    assert.match(c!.authorization ?? '', /^AWS4-HMAC-SHA256 Credential=AKIDSTANDIN\/\d{8}\/eu-west-1\/autoscaling\/aws4_request, SignedHeaders=[^,]+, Signature=[0-9a-f]{64}$/);
  });

  test('launch raises the desired capacity, bounded by the group max, and reports the new instances', async () => {
    const added = await provider.launch(3); // 3 + 3 > max 4: one only
    assert.equal(added.length, 1);
    assert.match(added[0]!.nodeId, /^i-[0-9a-f]+$/);
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups', 'SetDesiredCapacity', 'DescribeAutoScalingGroups']);
    const set = stand.calls[1]!.params;
    assert.equal(set.AutoScalingGroupName, GROUP);
    assert.equal(set.DesiredCapacity, '4');
    assert.equal(set.HonorCooldown, 'false');
    for (const c of stand.calls) assert.match(c.authorization ?? '', /^AWS4-HMAC-SHA256 /);

    // At max: refused with its code, and the desired capacity is not touched.
    stand.calls = [];
    await rejectsWith(provider.launch(1), 'provider_at_capacity');
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups']);
    await assert.rejects(provider.launch(0), RangeError);
  });

  test('terminate removes the drained node’s own instance and decrements the desired capacity', async () => {
    await provider.terminate(A);
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups', 'TerminateInstanceInAutoScalingGroup']);
    assert.deepEqual(
      { InstanceId: stand.calls[1]!.params.InstanceId, ShouldDecrementDesiredCapacity: stand.calls[1]!.params.ShouldDecrementDesiredCapacity },
      { InstanceId: A, ShouldDecrementDesiredCapacity: 'true' },
    );
    assert.equal(stand.group.desired, 2);
    assert.ok(!(await provider.list()).some((n) => n.nodeId === A), 'a terminating instance is no longer listed');
    // Repeated (an autoscaler restarted after the call): done, no second terminate.
    stand.calls = [];
    await provider.terminate(A);
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups']);
  });

  test('terminate refuses a node that is not an instance of the group, without calling Terminate', async () => {
    // An instance of another group (or account) that the role could otherwise terminate.
    await rejectsWith(provider.terminate('i-0bbbbbbbbbbbbbbbb'), 'node_not_owned', (e) => /not in scaling group/.test(e.message));
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups']);
    // Node ids that are not instance ids (joined by hand, or crafted): refused before any call.
    stand.calls = [];
    for (const id of ['node-a', `${A}/../i-0bbbbbbbbbbbbbbbb`, `${A} `, 'I-0123456789ABCDEF0', '']) {
      await rejectsWith(provider.terminate(id), 'node_not_owned');
    }
    assert.deepEqual(stand.calls, []);
    assert.equal(stand.group.desired, 3);
    assert.ok(stand.group.instances.every((i) => i.id !== A || i.state === 'InService'));
  });

  test('throttling is retried; persistent 5xx and refusals surface as structured errors', async () => {
    stand.faults = [{ status: 400, code: 'Throttling' }];
    assert.equal((await provider.list()).length, 2);
    assert.equal(stand.calls.length, 2, 'one throttled call, one retry');

    stand.calls = [];
    stand.faults = Array.from({ length: 10 }, () => ({ status: 503, code: 'ServiceUnavailable' }));
    await rejectsWith(provider.list(), 'provider_unavailable', (e) => e.details?.httpStatus === 503 && e.details?.providerCode === 'ServiceUnavailable');
    assert.equal(stand.calls.length, 3, 'the standard retry mode: three attempts');

    // A refusal is not retried and is not "unavailable": it needs the operator (permissions), not patience.
    stand.calls = [];
    stand.faults = [{ status: 403, code: 'AccessDenied' }];
    await rejectsWith(provider.launch(1), 'provider_rejected', (e) => e.details?.providerCode === 'AccessDenied' && e.details?.httpStatus === 403);
    assert.equal(stand.calls.length, 1);

    // A SetDesiredCapacity throttled through every retry: surfaced, and the group is as it was.
    stand.calls = [];
    stand.faults = Array.from({ length: 3 }, () => ({ status: 400, code: 'Throttling', action: 'SetDesiredCapacity' }));
    await rejectsWith(provider.launch(1), 'provider_unavailable', (e) => e.details?.providerCode === 'Throttling');
    assert.deepEqual(stand.calls.map((c) => c.action), ['DescribeAutoScalingGroups', 'SetDesiredCapacity', 'SetDesiredCapacity', 'SetDesiredCapacity']);
    assert.equal(stand.group.desired, 3);

    // Raised, but the group cannot be described afterwards: the scale out happened, so launch does not fail (a
    // failure would let the autoscaler count no scale out and raise the capacity again).
    stand.calls = [];
    stand.faults = [];
    const quick = new AwsAutoScalingGroupProvider({ autoScalingGroupName: GROUP, endpoint: stand.url, launchWaitMs: 200, pollMs: 50, maxAttempts: 1 });
    try {
      let described = 0;
      stand.onCall = (action) => {
        if (action === 'DescribeAutoScalingGroups' && ++described > 1) stand.faults.unshift({ status: 503, code: 'ServiceUnavailable', action });
      };
      assert.deepEqual(await quick.launch(1), []);
      assert.equal(stand.group.desired, 4);
      assert.ok(stand.calls.filter((c) => c.action === 'DescribeAutoScalingGroups').length >= 2);
    } finally {
      stand.onCall = undefined;
      quick.destroy();
    }
  });

  test('an unknown group is provider_not_found; an unreachable endpoint is provider_unavailable', async () => {
    stand.group.exists = false;
    await rejectsWith(provider.list(), 'provider_not_found');
    await rejectsWith(provider.terminate(A), 'provider_not_found');
    const closed = new AwsAutoScalingGroupProvider({ autoScalingGroupName: GROUP, endpoint: 'http://127.0.0.1:1', maxAttempts: 2 });
    try {
      await rejectsWith(closed.list(), 'provider_unavailable');
    } finally {
      closed.destroy();
    }
  });
});
