// The JavaScript/TypeScript evaluator: a Node child of the `javascript` wrapper kernel
// (guest/kernels/js_kernel.py). It reads one JSON request per line on stdin and writes
// JSON frames on fd 3; the cell's own stdout/stderr writes become frames too, so they stay
// in order with the result. fd 1/2 stay plain pipes for grandchildren that inherit them.
import { createRequire } from 'node:module';
import { writeSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { inspect } from 'node:util';
import vm from 'node:vm';
import { rewriteCell } from './transform.js';

const FRAME_FD = Number(process.env.COVE_FRAME_FD ?? 3);
delete process.env.COVE_FRAME_FD;
// Output frames stay small so the kernel reads them with a bounded line buffer.
const FRAME_TEXT = 64 * 1024;
const MAX_RESULT_TEXT = 4 * 1024 * 1024;

function send(frame: Record<string, unknown>): void {
  const line = JSON.stringify(frame) + '\n';
  // Blocking writes on the pipe: a flooding cell waits for the kernel to read (backpressure).
  let buf = Buffer.from(line);
  while (buf.length > 0) {
    try {
      const n = writeSync(FRAME_FD, buf);
      buf = buf.subarray(n);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
  }
}

function captureStream(stream: NodeJS.WriteStream, name: 'stdout' | 'stderr'): void {
  stream.write = ((chunk: unknown, encoding?: unknown, cb?: unknown): boolean => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString(typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    for (let i = 0; i < text.length; i += FRAME_TEXT) send({ t: name, s: text.slice(i, i + FRAME_TEXT) });
    const done = typeof encoding === 'function' ? encoding : cb;
    if (typeof done === 'function') process.nextTick(done as () => void);
    return true;
  }) as typeof stream.write;
}
captureStream(process.stdout, 'stdout');
captureStream(process.stderr, 'stderr');

// A require() that resolves from the current directory, as a script in cwd would.
function cellRequire(id: string): unknown {
  return createRequire(join(process.cwd(), '__cove_cell__.js'))(id);
}
const moduleObj = { exports: {} as Record<string, unknown> };
const sandbox: Record<string, unknown> = {
  console, process, Buffer, require: cellRequire, module: moduleObj, exports: moduleObj.exports,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate, queueMicrotask,
  URL, URLSearchParams, TextEncoder, TextDecoder, structuredClone, fetch, AbortController, AbortSignal,
  performance, atob, btoa, Blob, Headers, Request, Response, FormData, EventTarget, Event,
  __filename: join(process.cwd(), '[cell]'), __dirname: process.cwd(),
};
const context = vm.createContext(sandbox);

// SIGINT (a Jupyter interrupt reaches the whole kernel process group) aborts the running cell.
let abortCurrent: ((err: Error) => void) | null = null;
process.on('SIGINT', () => {
  abortCurrent?.(Object.assign(new Error('Script execution was interrupted'), { name: 'Interrupted' }));
});

function formatValue(value: unknown): string {
  const text = typeof value === 'string' ? `'${value}'` : inspect(value, { depth: 4, colors: false, maxArrayLength: 1000, maxStringLength: MAX_RESULT_TEXT });
  return text.length > MAX_RESULT_TEXT ? `${text.slice(0, MAX_RESULT_TEXT)}… [${text.length - MAX_RESULT_TEXT} more characters]` : text;
}

// The stack without the evaluator's own frames: the message, then frames in the cell or user modules.
function cellFrames(stack: string): string[] {
  return stack.split('\n').filter((l) => !/^\s+at /.test(l) || !(l.includes(__filename) || /\(node:vm|sigintHandlersWrap|node:internal/.test(l)));
}

function errorFrame(id: number, err: unknown): Record<string, unknown> {
  if (err instanceof Error || (err && typeof err === 'object' && 'stack' in err)) {
    const e = err as Error;
    // vm's own SIGINT break (during synchronous code) and our handler's (during an await) are one thing.
    const interrupted = (e as { code?: unknown }).code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED' || e.name === 'Interrupted';
    return { t: 'error', id, ename: interrupted ? 'Interrupted' : e.name || 'Error', evalue: e.message ?? String(e), traceback: cellFrames(String(e.stack ?? `${e.name}: ${e.message}`)) };
  }
  return { t: 'error', id, ename: 'Error', evalue: String(err), traceback: [`Uncaught ${formatValue(err)}`] };
}

async function runCell(id: number, code: string, silent: boolean): Promise<void> {
  let script: vm.Script;
  try {
    script = new vm.Script(rewriteCell(code).code, { filename: '[cell]' });
  } catch (err) {
    send(errorFrame(id, err));
    return;
  }
  try {
    const pending = script.runInContext(context, { breakOnSigint: true, displayErrors: false }) as Promise<unknown>;
    const value = await new Promise<unknown>((resolve, reject) => {
      abortCurrent = reject;
      pending.then(resolve, reject);
    });
    if (!silent && value !== undefined) send({ t: 'result', id, data: { 'text/plain': formatValue(value) } });
  } catch (err) {
    send(errorFrame(id, err));
  } finally {
    abortCurrent = null;
  }
}

process.on('unhandledRejection', (err) => send({ t: 'stderr', s: `Unhandled rejection: ${inspect(err)}\n` }));
process.on('uncaughtException', (err) => send({ t: 'stderr', s: `Uncaught exception: ${inspect(err)}\n` }));

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
let queue = Promise.resolve();
lines.on('line', (line) => {
  const req = JSON.parse(line) as { id: number; code: string; silent?: boolean };
  queue = queue.then(() => runCell(req.id, req.code, !!req.silent)).then(() => send({ t: 'done', id: req.id }));
});
lines.on('close', () => { void queue.then(() => process.exit(0)); });
send({ t: 'ready' });
