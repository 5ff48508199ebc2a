// Runs the built guest directory in a code-interpreter rootfs, without the platform, for the
// component tests (see run-in-rootfs.sh). The server then answers on localhost:49999, which is
// where the unchanged SDK's debug mode (E2B_DEBUG=true) sends every call.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODE_INTERPRETER_PORT, guestDir } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, '..', '..');
export const BASE_URL = `http://127.0.0.1:${CODE_INTERPRETER_PORT}`;

/** The rootfs: COVE_CI_ROOTFS, else the installed template's. Missing → a failure that says what to do. */
export function rootfsPath(): string {
  const candidates = [process.env.COVE_CI_ROOTFS, '/var/lib/cove/templates/code-interpreter-v1/current/rootfs'].filter(Boolean) as string[];
  const found = candidates.find((p) => existsSync(join(p, 'usr', 'bin', 'python3')));
  if (!found) {
    throw new Error(
      `no code-interpreter rootfs: set COVE_CI_ROOTFS to a rootfs built from ` +
        `packages/orchestrator/templates/code-interpreter-v1/recipe.json (looked in: ${candidates.join(', ')})`,
    );
  }
  return found;
}

async function healthy(): Promise<boolean> {
  try {
    const res = await fetch(`${BASE_URL}/health`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

export interface Guest { proc: ChildProcess; log: () => string; stop: () => Promise<void> }

export async function startGuest(extraEnv: Record<string, string> = {}): Promise<Guest> {
  const rootfs = rootfsPath();
  if (!existsSync(join(guestDir(), 'start'))) throw new Error(`guest not built: run npm run bundle -w @cove/code-interpreter (${guestDir()})`);
  if (await healthy()) throw new Error(`something already serves ${BASE_URL}; stop it first`);
  const scratch = mkdtempSync(join(tmpdir(), 'cove-ci-test-'));
  const proc = spawn(join(pkgDir, 'test', 'run-in-rootfs.sh'), [rootfs, guestDir(), scratch], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...extraEnv },
  });
  let output = '';
  const keep = (b: Buffer) => { output = (output + b.toString()).slice(-20000); };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); // unshare ignores SIGTERM
    await exited;
    rmSync(scratch, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  while (!(await healthy())) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await stop();
      throw new Error(`the guest exited before it was ready:\n${output}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the guest was not ready within 90 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { proc, log: () => output, stop };
}
