// BullMQ's processed jobs/s for no-op jobs on the Redis at REDIS_URL, the
// same shape as dwa's "redis" benchmark: N jobs added by 32 concurrent
// producers while a worker of the same concurrency processes them.
const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");
const { durability, redisCpu, commands } = require("./redis-info");

const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const n = Number(process.env.DWA_BENCH_REDIS_TASKS || 20000);
const concurrency = Number(process.env.BULLMQ_CONCURRENCY || 64);
const workers = Number(process.env.BULLMQ_WORKERS || 1);
// BULLMQ_KEEP=1 keeps completed jobs (as dwa keeps finished tasks for its
// retention period); by default BullMQ deletes each job as it completes.
const keep = process.env.BULLMQ_KEEP === "1";

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
        removeOnComplete: keep ? false : { count: 0 },
      }),
    );
    ws[w].on("completed", () => {
      done += 1;
      if (done === n) finish();
    });
  }
  await Promise.all(ws.map((w) => w.waitUntilReady()));
  const before = await commands(admin);
  const cpuBefore = await redisCpu(admin);
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
  const cpu = (await redisCpu(admin)) - cpuBefore;
  const label = `bullmq, ${workers} worker(s)${keep ? ", kept" : ""} [${await durability(admin)}]`;
  console.log(
    `${label.padEnd(34)} ${n} jobs: enqueue ${(n / added).toFixed(0).padStart(7)}/s, processed ${(n / total).toFixed(0).padStart(7)} jobs/s end to end; ${(cmds / n).toFixed(1)} Redis commands and ${((cpu * 1e6) / n).toFixed(0)} µs of Redis CPU per job (concurrency ${concurrency}/worker)`,
  );
  await Promise.all(ws.map((w) => w.close()));
  await queue.close();
  admin.disconnect();
}

// Exits on its own: a worker still closing would keep the process alive.
main().then(() => process.exit(0)).catch((e) => {
  console.error(e);
  process.exit(1);
});
