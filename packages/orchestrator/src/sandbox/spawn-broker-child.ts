// The spawn broker's child: a small Node process that starts the host tools the orchestrator asks for over its
// IPC channel and sends back each one's exit code and output. It forks from its own small address space, so the
// orchestrator's large one is never copied and its event loop never stops for a fork (spawn-broker.ts).

import { spawn } from 'node:child_process';
import type { BrokerReply, BrokerRequest } from './spawn-broker.js';

function reply(msg: BrokerReply): void {
  process.send?.(msg);
}

function runOne(req: BrokerRequest): void {
  const failed = (err: NodeJS.ErrnoException): void =>
    reply({ id: req.id, error: { message: err.message, code: err.code, errno: err.errno, syscall: err.syscall, path: err.path } });
  if (req.nullStdio) {
    const child = spawn(req.cmd, req.args, { stdio: 'ignore', env: req.env, ...(req.cwd ? { cwd: req.cwd } : {}) });
    child.on('error', failed);
    child.on('close', (code) => reply({ id: req.id, code, stdout: '', stderr: '' }));
    return;
  }
  const child = spawn(req.cmd, req.args, { stdio: ['pipe', 'pipe', 'pipe'], env: req.env, ...(req.cwd ? { cwd: req.cwd } : {}) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  child.on('error', failed);
  child.on('close', (code) => reply({ id: req.id, code, stdout, stderr }));
  child.stdin.on('error', () => undefined); // the tool may exit before reading its input; its exit code says what happened
  child.stdin.end(req.input ?? '');
}

process.on('message', (msg: BrokerRequest) => runOne(msg));
// The orchestrator is gone (its end of the channel closed): nothing is left to answer. Tools still running keep
// running, as they would have had the orchestrator spawned them itself.
process.on('disconnect', () => process.exit(0));
