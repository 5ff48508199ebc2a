#!/usr/bin/env node
// Process entry of the orchestrator: the only file that touches process.*. Parses the config, prepares the
// host (the first run builds the base template — minutes; progress is logged), recovers sandboxes left by a
// previous run, listens, and on SIGTERM/SIGINT stops accepting work while leaving running sandboxes alone:
// the next start re-adopts them.

import { buildOrchestrator } from './app.js';
import { ConfigError, loadConfig, type OrchestratorConfig } from './config.js';
import { createLogger } from './logger.js';
import { LinuxSandboxRuntime } from './sandbox/linux-runtime.js';
import { SecretVault } from './sandbox/secret-vault.js';
import { openClusterStorage } from './templates/storage.js';
import { BACKGROUND_TEMPLATES } from './code-interpreter.js';

async function main(): Promise<void> {
  let config: OrchestratorConfig;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel).child({ nodeId: config.nodeId });
  if (config.edgeUrl && ['0.0.0.0', '::'].includes(config.advertiseHost)) {
    log.warn({ advertiseHost: config.advertiseHost }, 'COVE_ORCH_ADVERTISE_HOST is a wildcard; edges cannot dial it — set it to this node\'s address');
  }
  const runtime = new LinuxSandboxRuntime({
    dataDir: config.dataDir,
    envdDir: config.envdBundle,
    nodeBinary: process.execPath,
    logger: log,
    // `base` is every SDK's default template; other warm-pooled templates must exist before their pools fill.
    // code-interpreter-v1 (minutes to build the first time) comes after, in the background: base sandboxes never
    // wait for it, and its Creates fail fast (template_not_ready) until it is there.
    templates: [...new Set(['base', ...Object.keys(config.warmPool)])].filter((t) => !BACKGROUND_TEMPLATES.includes(t)),
    backgroundTemplates: [...config.builtinTemplates],
    codeInterpreterGuestDir: config.codeInterpreterGuestDir,
    ...(config.volumesDir ? { volumesDir: config.volumesDir } : {}),
    ...(config.runtime.templateCacheDir ? { templatesDir: config.runtime.templateCacheDir } : {}),
    ...(config.runtime.subnet ? { subnet: config.runtime.subnet } : {}),
    ...(config.runtime.bridge ? { bridge: config.runtime.bridge } : {}),
    ...(config.runtime.instance ? { instance: config.runtime.instance } : {}),
    ...(config.runtime.vethPrefix ? { vethPrefix: config.runtime.vethPrefix } : {}),
    ...(config.runtime.egressDns ? { egressDns: config.runtime.egressDns } : {}),
    // The artifact key is held by every node of the cluster and not by the control plane: sandbox CAs derive from it.
    egressCaKey: config.artifactKey,
    // E2B Secret values: sealed to the cluster key, read from cluster storage, opened only by this node's proxy.
    egressSecrets: new SecretVault(openClusterStorage(config.storage, { dataDir: config.dataDir, logger: log.child({ module: 'secrets' }) }), config.artifactKey),
    ...(config.runtime.egressUpstreamCaFile ? { egressUpstreamCaFile: config.runtime.egressUpstreamCaFile } : {}),
    onTemplateProgress: (templateId, line) => log.info({ templateId, line }, 'template build'),
  });

  log.info({ dataDir: config.dataDir, envdBundle: config.envdBundle, codeInterpreterGuestDir: config.codeInterpreterGuestDir }, 'preparing node (the first run builds templates)');
  await runtime.prepare();
  const orchestrator = buildOrchestrator(config, { runtime, log });
  await orchestrator.start();
  await orchestrator.listen();

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down; running sandboxes stay up and are re-adopted on the next start');
    // A wedged close (a runtime call that never returns) must not keep a stopping node half alive.
    setTimeout(() => {
      log.error('shutdown took longer than 20 s, exiting');
      process.exit(1);
    }, 20_000).unref();
    runtime.stopBackgroundBuilds();
    orchestrator.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`orchestrator failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
