// TAC-X's agent sandbox driver: runs one command inside @anthropic-ai/sandbox-runtime (bubblewrap
// with its own PID, mount, user and network namespaces; network only through srt's host-side
// filtering proxies) and records every refused connection as one JSON line.
//
//   node driver.mjs SRT_MODULE CONFIG.json VIOLATIONS.jsonl WORKDIR -- PROGRAM ARG...
//
// SRT_MODULE is the library's entry file (node_modules/@anthropic-ai/sandbox-runtime/dist/index.js).
// The driver starts in an empty directory (srt guards the dotfiles of its working directory with
// placeholder mounts) and moves to WORKDIR (the agent's worktree) once the sandbox is started,
// so TAC-X's reaper recognises the process group as this worktree's agent.
// CONFIG.json is a complete srt settings object written by pipeline/sandbox/__init__.py. stdin,
// stdout and stderr pass straight through; the exit status is the command's (128+N for signal N).
// SIGTERM/SIGINT/SIGHUP are passed on to the sandbox; if this process dies, bubblewrap's
// --die-with-parent takes the whole sandbox (every process in its PID namespace) with it.
import fs from 'node:fs';
import os from 'node:os';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';

const [modulePath, configPath, violationsPath, workdir, separator, ...argv] = process.argv.slice(2);
if (!modulePath || !configPath || !workdir || !violationsPath || separator !== '--' || argv.length === 0) {
  process.stderr.write('tacx sandbox: usage: driver.mjs SRT_MODULE CONFIG VIOLATIONS WORKDIR -- PROGRAM ARG...\n');
  process.exit(2);
}

function fail(message) {
  process.stderr.write(`tacx sandbox: ${message}\n`);
  process.exit(125);
}

let SandboxManager;
try {
  ({ SandboxManager } = await import(pathToFileURL(modulePath).href));
} catch (err) {
  fail(`cannot load the sandbox runtime from ${modulePath}: ${err.message}`);
}

let config;
try {
  config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
} catch (err) {
  fail(`cannot read the sandbox settings ${configPath}: ${err.message}`);
}

const out = fs.openSync(violationsPath, 'a');
const DENY = /^deny network-outbound (.+):(\d+) \((.*)\)$/;
let recorded = 0;
function record(violations, total) {
  // The store keeps the last 100 and a running total: write only the ones not written yet.
  const fresh = violations.slice(Math.max(0, violations.length - (total - recorded)));
  recorded = total;
  for (const v of fresh) {
    const m = DENY.exec(v.line || '');
    const entry = m
      ? { kind: 'network', host: m[1], port: Number(m[2]), reason: m[3] }
      : { kind: 'other', line: v.line };
    entry.time = new Date().toISOString();
    fs.writeSync(out, JSON.stringify(entry) + '\n');
  }
}

try {
  await SandboxManager.initialize(config);
} catch (err) {
  fail(`the sandbox could not be set up: ${err && err.message ? err.message : err}`);
}
const store = SandboxManager.getSandboxViolationStore();
store.subscribe(violations => record(violations, store.getTotalCount()));

const quote = s => `'${String(s).replace(/'/g, `'\\''`)}'`;
let wrapped;
try {
  wrapped = await SandboxManager.wrapWithSandbox(argv.map(quote).join(' '));
} catch (err) {
  fail(`the sandbox could not wrap the command: ${err && err.message ? err.message : err}`);
}

const child = spawn('/bin/bash', ['-c', wrapped], { stdio: 'inherit' });
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => child.kill(sig));
}
child.on('error', err => fail(`cannot start bubblewrap: ${err.message}`));
try {
  process.chdir(workdir);
} catch {
  // only the reaper's recognition depends on it
}
child.on('exit', (code, signal) => {
  try {
    SandboxManager.cleanupAfterCommand();
  } catch {
    // best effort: leftover mount-point files are harmless
  }
  record(store.getViolations(), store.getTotalCount());
  fs.closeSync(out);
  process.exit(signal ? 128 + (os.constants.signals[signal] || 1) : code ?? 1);
});
