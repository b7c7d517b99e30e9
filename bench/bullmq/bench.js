// BullMQ's processed jobs/s for no-op jobs on the Redis at REDIS_URL, the
// same shape as dwa's "redis" benchmark: N jobs added by 32 concurrent
// producers while a worker of the same concurrency processes them.
const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");

const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const n = Number(process.env.DWA_BENCH_REDIS_TASKS || 20000);
const concurrency = Number(process.env.BULLMQ_CONCURRENCY || 64);
const workers = Number(process.env.BULLMQ_WORKERS || 1);

async function main() {
  const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
  const admin = conn();
  await admin.flushall();
  const name = "bench";
  const queue = new Queue(name, { connection: conn() });
  let done = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const ws = [];
  for (let w = 0; w < workers; w++) {
    ws.push(
      new Worker(name, async (job) => job.data, {
        connection: conn(),
        concurrency,
        removeOnComplete: { count: 0 },
      }),
    );
    ws[w].on("completed", () => {
      done += 1;
      if (done === n) finish();
    });
  }
  await Promise.all(ws.map((w) => w.waitUntilReady()));
  const before = await commands(admin);
  const start = process.hrtime.bigint();
  const producers = [];
  for (let p = 0; p < 32; p++) {
    producers.push(
      (async () => {
        for (let i = p; i < n; i += 32) await queue.add("noop", { n: 1 });
      })(),
    );
  }
  await Promise.all(producers);
  const added = Number(process.hrtime.bigint() - start) / 1e9;
  await finished;
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  const cmds = (await commands(admin)) - before;
  console.log(
    `${`bullmq, ${workers} worker(s)`.padEnd(34)} ${n} jobs: enqueue ${(n / added).toFixed(0).padStart(7)}/s, processed ${(n / total).toFixed(0).padStart(7)} jobs/s end to end; ${(cmds / n).toFixed(1)} Redis commands per job (concurrency ${concurrency}/worker)`,
  );
  await Promise.all(ws.map((w) => w.close()));
  await queue.close();
  admin.disconnect();
}

async function commands(redis) {
  const info = await redis.info("stats");
  const m = info.match(/total_commands_processed:(\d+)/);
  return m ? Number(m[1]) : 0;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
