#!/usr/bin/env node
// The autoscaler process `cove up --autoscale` starts (autoscale.ts): `autoscaler-main.js <settings file>`.
import { readFileSync } from 'node:fs';
import { LOCAL_MAX_NODES, runAutoscaler, type AutoscaleSettings } from './autoscale.js';
import { startComponent, topologyOf } from './deployment.js';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: autoscaler-main.js <autoscale.json>\n');
  process.exit(2);
}
const s = JSON.parse(readFileSync(file, 'utf8')) as AutoscaleSettings;
const say = (line: string) => process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: line }) + '\n');
const topo = topologyOf({ stateDir: s.stateDir, portOffset: s.portOffset, nodeDataDir: s.nodeDataDir, warmPool: s.warmPool, nodes: LOCAL_MAX_NODES, say });
runAutoscaler(s, topo, (spec, paths) => startComponent(spec, paths, { say })).catch((err: Error) => {
  process.stderr.write(`autoscaler: ${err.message}\n`);
  process.exit(1);
});
