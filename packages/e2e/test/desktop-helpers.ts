// Helpers the desktop e2e files share: PNG size, commands that may fail, stopping the stream, waiting for the
// nodes' desktop template and warm pools.
import assert from 'node:assert/strict';
import { Sandbox } from '@e2b/desktop';
import { CommandExitError, Sandbox as BaseSandbox } from 'e2b';
import { DESKTOP_TEMPLATE_ID } from '@cove/contracts/sandbox';
import { deployment, eventually } from './deployment.js';

/** Width and height from a PNG's IHDR chunk (bytes 16-23), after checking the signature. */
export function pngSize(bytes: Uint8Array): { width: number; height: number } {
  const b = Buffer.from(bytes);
  assert.equal(b.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'a PNG');
  assert.equal(b.subarray(12, 16).toString('latin1'), 'IHDR');
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

/** Stdout of a command, or its exit code when it failed (no throw). */
export async function run(sbx: BaseSandbox, cmd: string, user: 'user' | 'root' = 'user'): Promise<{ code: number; out: string }> {
  try {
    const r = await sbx.commands.run(cmd, { user, timeoutMs: 60_000 });
    return { code: 0, out: r.stdout };
  } catch (err) {
    if (err instanceof CommandExitError) return { code: err.exitCode, out: err.stdout + err.stderr };
    throw err;
  }
}

/**
 * stream.stop() signals x11vnc and returns at once; the SDK's next start() refuses ("Stream is already running")
 * while it is still exiting, so a test that starts the stream again waits until it is gone.
 */
export async function stopStream(d: Sandbox): Promise<void> {
  await d.stream.stop();
  await eventually(async () => (await run(d, 'pgrep -x x11vnc')).code !== 0, 15_000, 'x11vnc gone after stream.stop()');
}

export type NodeView = { status: string; info?: { readyTemplates?: string[]; buildingTemplates?: string[]; warmPools?: Array<{ templateId?: string; ready?: number; target?: number }> } };

/**
 * Waits until a healthy node lists `desktop` in its ready templates and none is still building it (the nodes build
 * it in the background); with `warm`, until every healthy node also has its desktop warm pool full (wherever
 * placement puts the create, a pre-started desktop waits there).
 */
export async function desktopReady(warm = false): Promise<void> {
  const d = deployment();
  await eventually(
    async () => {
      const res = await fetch(`http://127.0.0.1:${d.ports.edgeApi}/v1/nodes`, { headers: { authorization: `Bearer ${d.secrets.clusterToken}` } });
      const nodes = ((await res.json()) as NodeView[]).filter((n) => n.status === 'healthy');
      const ready = nodes.some((n) => (n.info?.readyTemplates ?? []).includes(DESKTOP_TEMPLATE_ID));
      // A node rebuilding the template (its recipe changed since the machine last built it) starts the older build
      // meanwhile: the tests are about the current one.
      const building = nodes.some((n) => (n.info?.buildingTemplates ?? []).includes(DESKTOP_TEMPLATE_ID));
      const full = nodes.every((n) => {
        const pool = n.info?.warmPools?.find((p) => p.templateId === DESKTOP_TEMPLATE_ID);
        return pool !== undefined && (pool.ready ?? 0) >= (pool.target ?? 0) && (pool.target ?? 0) > 0;
      });
      return ready && !building && (!warm || full);
    },
    20 * 60_000,
    `a node with the ${DESKTOP_TEMPLATE_ID} template ready${warm ? ' and every node\'s desktop warm pool full' : ''}`,
    500,
  );
}

