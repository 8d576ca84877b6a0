// HTTPSocket as an npm package: the declarations type-check a page's use
// (`tsc --noEmit`), declare exactly the module's public members, `npm pack`
// makes a tarball with the module, its types and its README, and that
// tarball installs into a fresh project where `import 'httpsocket'` and its
// types resolve through `exports`. The version is tether's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { HTTPSocket } from '../httpsocket.js';

const HERE = dirname(dirname(fileURLToPath(import.meta.url)));
const TSC = join(HERE, 'node_modules', 'typescript', 'bin', 'tsc');

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return r;
}

function ok(r, what) {
  assert.equal(r.status, 0, `${what} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'httpsocket-pkg-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('tsc --noEmit accepts tests/types.ts against httpsocket.d.ts, with its expected errors', () => {
  ok(run(process.execPath, [TSC, '--noEmit', '-p', 'tsconfig.json'], HERE), 'tsc --noEmit');
});

test('tsc refuses a misuse the declarations rule out', (t) => {
  // The check above only means something if tsc reads the declarations.
  const dir = tempDir(t);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', lib: ['es2022', 'dom'], types: [] },
      files: ['bad.ts'],
    }),
  );
  writeFileSync(
    join(dir, 'bad.ts'),
    `import { HTTPSocket } from ${JSON.stringify(join(HERE, 'httpsocket.js'))};\nnew HTTPSocket('/a').send(1);\n`,
  );
  const r = run(process.execPath, [TSC, '-p', 'tsconfig.json'], dir);
  assert.notEqual(r.status, 0, 'tsc accepted send(1)');
  assert.match(r.stdout, /bad\.ts\(2,.*TS2345/);
});

/** Public members declared in the `class HTTPSocket` block of the .d.ts. */
function declaredMembers() {
  const dts = readFileSync(join(HERE, 'httpsocket.d.ts'), 'utf8');
  const body = dts.slice(dts.indexOf('export class HTTPSocket'));
  const names = new Set();
  for (const m of body.matchAll(/^ {2}(?:readonly )?([A-Za-z]\w*)\s*[(:<]/gm)) names.add(m[1]);
  for (const inherited of ['constructor', 'addEventListener', 'removeEventListener']) names.delete(inherited);
  return names;
}

test('httpsocket.d.ts declares exactly the public members of the module', (t) => {
  class InertWebSocket {
    send() {}
    close() {}
  }
  const socket = new HTTPSocket('ws://127.0.0.1:9/x', { WebSocket: InertWebSocket });
  t.after(() => socket.close());
  const actual = new Set();
  for (const key of Object.keys(socket)) if (!key.startsWith('_')) actual.add(key);
  for (const key of Object.getOwnPropertyNames(HTTPSocket.prototype)) {
    if (!key.startsWith('_') && key !== 'constructor') actual.add(key);
  }
  const declared = declaredMembers();
  assert.ok(declared.size > 15, `only ${[...declared]} parsed from the .d.ts`);
  assert.deepEqual([...declared].sort(), [...actual].sort());
  // Static members (HTTPSocket.page) too.
  const dts = readFileSync(join(HERE, 'httpsocket.d.ts'), 'utf8');
  const body = dts.slice(dts.indexOf('export class HTTPSocket'));
  const declaredStatics = [...body.matchAll(/^ {2}static ([A-Za-z]\w*)\s*[(:<]/gm)].map((m) => m[1]).sort();
  const actualStatics = Object.getOwnPropertyNames(HTTPSocket).filter((k) => !['length', 'name', 'prototype'].includes(k)).sort();
  assert.deepEqual(declaredStatics, actualStatics);
  assert.deepEqual(actualStatics, ['page']);
  // Defaults in force are all declared options.
  const options = readFileSync(join(HERE, 'httpsocket.d.ts'), 'utf8');
  for (const key of Object.keys(socket.options)) {
    assert.match(options, new RegExp(`^  ${key}\\?:`, 'm'), `option ${key} is not declared`);
  }
});

test('the package version is tether\'s', () => {
  const pkg = JSON.parse(readFileSync(join(HERE, 'package.json'), 'utf8'));
  const cargo = readFileSync(join(HERE, '..', '..', 'Cargo.toml'), 'utf8');
  const workspace = cargo.slice(cargo.indexOf('[workspace.package]'));
  const version = /^version = "([^"]+)"/m.exec(workspace)?.[1];
  assert.ok(version, 'no [workspace.package] version in Cargo.toml');
  assert.equal(pkg.version, version);
});

test('npm pack makes a package that installs and resolves, module and types', (t) => {
  const dir = tempDir(t);
  const packed = JSON.parse(ok(run('npm', ['pack', '--json', '--pack-destination', dir], HERE), 'npm pack'));
  const files = packed[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ['README.md', 'httpsocket.d.ts', 'httpsocket.js', 'package.json']);
  const tarball = join(dir, packed[0].filename);

  const app = join(dir, 'app');
  ok(run('mkdir', ['-p', app]), 'mkdir');
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  ok(run('npm', ['install', '--no-audit', '--no-fund', '--offline', tarball], app), 'npm install');

  // The module through `exports`, in Node.
  writeFileSync(
    join(app, 'main.js'),
    "import { HTTPSocket } from 'httpsocket';\n" +
      "class Inert { send() {} close() {} }\n" +
      "const s = new HTTPSocket('https://gw.test/chat.pphp', { WebSocket: Inert });\n" +
      'console.log(s.url, s.readyState);\n' +
      's.close();\n',
  );
  const out = ok(run(process.execPath, ['main.js'], app), 'node main.js');
  assert.equal(out.trim(), 'wss://gw.test/chat.pphp connecting');

  // Its types, as a TypeScript project finds them.
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', lib: ['es2022', 'dom'], types: [] },
      files: ['use.ts'],
    }),
  );
  writeFileSync(
    join(app, 'use.ts'),
    "import { HTTPSocket, type HTTPSocketState } from 'httpsocket';\n" +
      "const s = new HTTPSocket('/chat.pphp');\n" +
      "const state: HTTPSocketState = s.readyState;\n" +
      's.online = (e) => console.log(e.detail.length, state);\n' +
      '// @ts-expect-error a line is a string\n' +
      's.send(1);\n',
  );
  ok(run(process.execPath, [TSC, '-p', 'tsconfig.json'], app), 'tsc in the installing project');
});
