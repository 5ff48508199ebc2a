// What the node remembers about a running sandbox, in memory and on disk. Secrets are left out on
// purpose: envd checks the access token itself, and the slot's init token is spent once /init is done.

import { z } from 'zod';

export const sandboxRecordSchema = z.object({
  version: z.literal(1),
  sandboxId: z.string(),
  templateId: z.string(),
  buildId: z.string(),
  teamId: z.string(),
  vcpu: z.number().int(),
  memoryMb: z.number().int(),
  diskMb: z.number().int(),
  metadata: z.record(z.string()),
  /** Epoch milliseconds. */
  startTime: z.number(),
  /** Epoch milliseconds; the node kills the sandbox at this time. */
  endTime: z.number(),
  envdVersion: z.string(),
  allowInternetAccess: z.boolean(),
  /** Egress address rules (slot-egress.ts); records of older versions have none. */
  egress: z.object({ allowOut: z.array(z.string()), denyOut: z.array(z.string()) }).default({ allowOut: [], denyOut: [] }),
  /** sha256 (hex) of the sandbox's traffic access token; '' = public. Reported to edges in heartbeats. */
  trafficTokenSha256: z.string().default(''),
  /** E2B's maskRequestHost: the Host the node proxy gives requests to the sandbox's ports ('' = the client's). */
  maskRequestHost: z.string().default(''),
  slotId: z.string(),
  address: z.string(),
  pid: z.number().int(),
  /** What envd was initialised with (a cold resume initialises a new envd with it again). */
  envVars: z.record(z.string()).default({}),
  /**
   * Where the sandbox's logs begin in envd's ring (the seq envd's /init answered with): entries up to it were the
   * slot's preparation. Absent on resumes (their pull goes on from the pause) and on records of older versions.
   */
  logsAfter: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  /**
   * Set before a pause or snapshot touches the slot (docs/pause-resume.md, "Crash safety"): a restarted node
   * finishes or undoes what this names.
   */
  pausing: z.object({
    snapshotId: z.string(),
    memory: z.boolean(),
    keepRunning: z.boolean(),
    /** envd's init secret, taken at pause time: the commit must not depend on the slot still existing. */
    initToken: z.string().optional(),
  }).optional(),
});

export type SandboxRecord = z.output<typeof sandboxRecordSchema>;
