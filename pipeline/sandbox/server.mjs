// TAC-X's sandbox server: one long-lived process per TAC-X worker process that keeps
// @anthropic-ai/sandbox-runtime initialised (its filtering proxies and socat bridges running), so
// an agent attempt pays only for wrapping its command, not for starting Node and the proxies.
//
//   node server.mjs SRT_MODULE SETTINGS.json
//
// SETTINGS.json: the session settings (bwrapPath, socatPath, ripgrep; empty allow-lists).
// Protocol: JSON lines on stdin, one answer line per request on stdout; the first line written is
// {"ready": true} or {"ready": false, "error": "..."}.
//
//   {"id": 1, "op": "wrap", "argv": [...], "filesystem": {...}, "allow": ["host:port", ...],
//    "violations": "/path/blocked.jsonl"}
//     -> {"id": 1, "ok": true, "command": "<shell command to run with /bin/bash -c>", "key": "..."}
//   {"id": 2, "op": "done", "key": "..."}   -> {"id": 2, "ok": true}
//
// Each wrapped command gets a random key (128 bits) that its proxy connections present: its own
// network allow-list applies to them and every connection the proxy refuses for it is appended to
// its violations file as {"kind": "network", "host", "port", "reason", "time"}. The server exits
// when its stdin closes (the TAC-X process that started it is gone).
import fs from 'node:fs';
import readline from 'node:readline';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';

const [modulePath, settingsPath] = process.argv.slice(2);
const say = obj => process.stdout.write(JSON.stringify(obj) + '\n');

let SandboxManager;
try {
  ({ SandboxManager } = await import(pathToFileURL(modulePath).href));
  await SandboxManager.initialize(JSON.parse(fs.readFileSync(settingsPath, 'utf8')));
} catch (err) {
  say({ ready: false, error: String(err && err.message ? err.message : err) });
  process.exit(1);
}

const DENY = /^deny network-outbound (.+):(\d+) \((.*)\)$/;
const active = new Map(); // encoded key -> {key, fd}
const store = SandboxManager.getSandboxViolationStore();
let recorded = store.getTotalCount();

function route() {
  const total = store.getTotalCount();
  const all = store.getViolations();
  const fresh = all.slice(Math.max(0, all.length - (total - recorded)));
  recorded = total;
  for (const v of fresh) {
    const target = active.get(v.encodedCommand);
    if (!target) continue;
    const m = DENY.exec(v.line || '');
    const entry = m ? { kind: 'network', host: m[1], port: Number(m[2]), reason: m[3] } : { kind: 'other', line: v.line };
    entry.time = (v.timestamp instanceof Date ? v.timestamp : new Date()).toISOString();
    try {
      fs.writeSync(target.fd, JSON.stringify(entry) + '\n');
    } catch {
      // the attempt's directory is gone: nothing left to record for it
    }
  }
}
store.subscribe(() => route());

const quote = s => `'${String(s).replace(/'/g, `'\\''`)}'`;

async function handle(req) {
  if (req.op === 'wrap') {
    const key = randomBytes(16).toString('base64url'); // 22 characters, 128 bits
    const encoded = Buffer.from(key).toString('base64');
    const fd = fs.openSync(req.violations, 'a');
    active.set(encoded, { key, fd });
    try {
      SandboxManager.registerCommandNetworkLists(key, { allowedDomains: req.allow || [] });
      const command = await SandboxManager.wrapWithSandbox(
        req.argv.map(quote).join(' '),
        undefined,
        { filesystem: req.filesystem, network: { allowedDomains: [], deniedDomains: [] } },
        undefined,
        { commandId: key },
      );
      return { ok: true, command, key };
    } catch (err) {
      active.delete(encoded);
      fs.closeSync(fd);
      SandboxManager.unregisterCommandNetworkLists(key);
      return { ok: false, error: String(err && err.message ? err.message : err) };
    }
  }
  if (req.op === 'done') {
    route();
    const encoded = Buffer.from(String(req.key)).toString('base64');
    const target = active.get(encoded);
    SandboxManager.unregisterCommandNetworkLists(String(req.key));
    if (target) {
      active.delete(encoded);
      fs.closeSync(target.fd);
    }
    try {
      SandboxManager.cleanupAfterCommand();
    } catch {
      // leftover mount-point files are harmless
    }
    return { ok: true };
  }
  return { ok: false, error: `unknown op ${JSON.stringify(req.op)}` };
}

say({ ready: true });
const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', async line => {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    say({ ok: false, error: 'not JSON' });
    return;
  }
  say({ id: req.id, ...(await handle(req)) });
});
lines.on('close', () => process.exit(0));
