// envd's `/init` body: the node sends it, envd parses it. Apart from the plain constants in ./index.ts, which envd's
// launcher bundles and so must not pull in zod.

import { z } from 'zod';

/**
 * `POST /init`'s JSON body. Every field is optional to envd (a body applies what it carries) and unknown fields pass,
 * so an older node and a newer envd still agree; `timestamp` (RFC 3339) orders inits, an older one is stale.
 */
export const EnvdInitBody = z
  .object({
    envVars: z.record(z.string(), z.string()).optional(),
    accessToken: z.string().optional(),
    defaultUser: z.string().min(1).max(64).optional(),
    defaultWorkdir: z.string().min(1).max(4096).optional(),
    hostname: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/).optional(),
    timestamp: z.string().optional(),
  })
  .passthrough();
export type EnvdInitBody = z.infer<typeof EnvdInitBody>;
