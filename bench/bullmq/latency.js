// BullMQ's add → processor start latency on the Redis at REDIS_URL, the
// same shape as dwa's "latency" benchmark: 2,500 jobs added open loop at
// 500/s (the sender never waits for an add; each job's clock starts when
// the sender wakes to add it), a worker of concurrency 5. Prints `BENCH` lines for
// scripts/bench.sh's summary.
const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");
const { durability } = require("./redis-info");

const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const n = 2500;
const rate = 500;

const now = () => Number(process.hrtime.bigint()) / 1e6;

async function main() {
  const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
  const admin = conn();
  await admin.flushall();
  const name = "latency";
  const queue = new Queue(name, { connection: conn() });
  const lat = [];
  let finish;
  const finished = new Promise((r) => (finish = r));
  const worker = new Worker(
    name,
    async (job) => {
      lat.push(now() - job.data.sent);
      if (lat.length === n) finish();
      return null;
    },
    { connection: conn(), concurrency: 5, removeOnComplete: { count: 0 } },
  );
  await worker.waitUntilReady();
  const origin = now() + 10;
  const adds = [];
  for (let i = 0; i < n; i++) {
    const scheduled = origin + (i * 1000) / rate;
    const wait = scheduled - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    adds.push(queue.add("noop", { sent: now() }));
  }
  await Promise.all(adds);
  await Promise.race([finished, new Promise((r) => setTimeout(r, 30000))]);
  lat.sort((a, b) => a - b);
  const pct = (p) => lat[Math.round((lat.length - 1) * p)];
  console.log(
    `${`bullmq latency [${await durability(admin)}]`.padEnd(34)} ${lat.length} jobs at ${rate}/s: sent→processor-start p50 ${pct(0.5).toFixed(2)} ms, p99 ${pct(0.99).toFixed(2)} ms, max ${pct(1).toFixed(2)} ms`,
  );
  console.log(`BENCH latency.bullmq.p50_ms=${pct(0.5).toFixed(4)}`);
  console.log(`BENCH latency.bullmq.p99_ms=${pct(0.99).toFixed(4)}`);
  await worker.close();
  await queue.close();
  admin.disconnect();
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e);
  process.exit(1);
});
