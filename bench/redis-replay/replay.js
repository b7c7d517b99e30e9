// Replays a MONITOR capture of dwa's scripts on Redis twice per round: with
// the scripts of one folder and of another (a script is known by its name),
// alternating, and prints the Redis CPU each took (min and median). A live
// run's Redis time also moves with how the host happened to batch its
// calls; a replay sends the same calls every time, so what is left is the
// scripts' own cost (and the machine's noise). See docs/benchmarks.md.
// usage: node replay.js CAPTURE CAPTURED_DIR DIR_A DIR_B PORT ROUNDS
const fs = require("fs");
const crypto = require("crypto");
const path = require("path");
const Redis = require(require.resolve("ioredis", { paths: [path.join(__dirname, "../bullmq")] }));

const [capture, capturedDir, dirA, dirB, port, rounds] = process.argv.slice(2);
// The commands the host's connection ran, not the ones its scripts ran.
const SKIP = new Set(["MONITOR", "SUBSCRIBE", "PING", "CLIENT", "INFO", "CONFIG", "FLUSHALL", "SCRIPT", "HELLO", "SELECT"]);

// As host/dwa-store/src/redis/scripts.rs builds them: lib.lua, a newline, the body.
const scriptText = (dir, name) =>
  fs.readFileSync(path.join(dir, "lib.lua"), "utf8") + "\n" + fs.readFileSync(path.join(dir, name), "utf8");
const sha1 = (t) => crypto.createHash("sha1").update(t).digest("hex");
const names = fs.readdirSync(capturedDir).filter((f) => f.endsWith(".lua") && f !== "lib.lua");
const nameOf = Object.fromEntries(names.map((n) => [sha1(scriptText(capturedDir, n)), n]));

// One MONITOR line's arguments: quoted, with C escapes (Redis's sdscatrepr).
function parse(line) {
  const at = line.indexOf("] ");
  if (at < 0 || line.slice(0, at).includes("lua")) return null;
  const s = line.slice(at + 2);
  const args = [];
  let j = 0;
  while (j < s.length) {
    if (s[j] === " ") { j++; continue; }
    if (s[j] !== '"') throw new Error(`unexpected MONITOR text: ${s.slice(j, j + 40)}`);
    j++;
    const bytes = [];
    while (s[j] !== '"') {
      if (s[j] === "\\") {
        const c = s[j + 1];
        if (c === "x") { bytes.push(parseInt(s.slice(j + 2, j + 4), 16)); j += 4; continue; }
        bytes.push({ n: 10, r: 13, t: 9, a: 7, b: 8, '"': 34, "\\": 92 }[c]);
        j += 2;
        continue;
      }
      bytes.push(...Buffer.from(s[j], "utf8"));
      j++;
    }
    j++;
    args.push(Buffer.from(bytes));
  }
  return args;
}

const commands = fs.readFileSync(capture, "utf8").split("\n").map(parse)
  .filter((a) => a && a.length && !SKIP.has(a[0].toString().toUpperCase()));

async function cpuMs(r) {
  return 1000 * parseFloat((await r.info("cpu")).match(/used_cpu_user:([\d.]+)/)[1]);
}

// Replays every command with dir's scripts on an empty Redis; answers the
// Redis CPU it took and how many tasks completed (the same in every replay).
async function replay(r, dir) {
  const sha = {};
  for (const n of names) sha[n] = await r.script("LOAD", scriptText(dir, n));
  await r.flushall();
  const before = await cpuMs(r);
  let prefix = null;
  let p = r.pipeline();
  for (const [i, a] of commands.entries()) {
    const args = a.slice(1);
    if (a[0].toString().toUpperCase() === "EVALSHA") {
      const name = nameOf[args[0].toString()];
      if (!name) throw new Error(`a script of the capture is not in ${capturedDir}: ${args[0]}`);
      args[0] = Buffer.from(sha[name]);
      prefix = prefix || args[2].toString();
    }
    p.callBuffer(a[0].toString(), ...args);
    if (i % 200 === 199) { await p.exec(); p = r.pipeline(); }
  }
  await p.exec();
  const ms = (await cpuMs(r)) - before;
  return { ms, completed: prefix ? await r.zcard(`${prefix}:idx:s:completed`) : 0 };
}

async function main() {
  const r = new Redis({ port: Number(port) });
  const runs = { [dirA]: [], [dirB]: [] };
  const completed = new Set();
  for (let i = 0; i < Number(rounds); i++) {
    for (const dir of [dirA, dirB]) {
      const { ms, completed: n } = await replay(r, dir);
      runs[dir].push(ms);
      completed.add(n);
    }
  }
  r.disconnect();
  if (completed.size !== 1) throw new Error(`the replays completed different numbers of tasks: ${[...completed]}`);
  console.log(`${commands.length} calls replayed, ${[...completed][0]} tasks completed in each replay`);
  for (const [dir, ms] of Object.entries(runs)) {
    ms.sort((a, b) => a - b);
    const med = ms[Math.floor(ms.length / 2)];
    console.log(`${dir}: Redis CPU min ${ms[0].toFixed(0)} ms, median ${med.toFixed(0)} ms (${ms.map((m) => m.toFixed(0)).join(" ")})`);
  }
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
