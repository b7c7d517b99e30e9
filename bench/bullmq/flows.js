// BullMQ's closest shape to dwa's DAG benchmark (host/dwa/benches/engine/dag.rs):
// 1,000 flows, each a parent job waiting on ten no-op children, added with
// FlowProducer.addBulk on the Redis at REDIS_URL while a worker at
// concurrency 100 processes them; timed until the last parent completed.
// Prints a `BENCH flows.seconds=` line for scripts/bench.sh's ratios.
const { FlowProducer, Worker } = require("bullmq");
const IORedis = require("ioredis");
const { durability } = require("./redis-info");

const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const flows = 1000;
const children = 10;
const concurrency = 100;

async function main() {
  const conn = () => new IORedis(url, { maxRetriesPerRequest: null });
  const admin = conn();
  await admin.flushall();
  const queueName = "dag";
  let parents = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const worker = new Worker(
    queueName,
    async (job) => job.data,
    { connection: conn(), concurrency },
  );
  worker.on("completed", (job) => {
    if (job.name === "join" && ++parents === flows) finish();
  });
  worker.on("failed", (job, err) => {
    console.error(`job ${job && job.name} failed: ${err}`);
    process.exit(1);
  });
  await worker.waitUntilReady();
  const producer = new FlowProducer({ connection: conn() });
  const tree = () => ({
    name: "join",
    queueName,
    data: { n: 1 },
    children: Array.from({ length: children }, (_, i) => ({ name: `s${i}`, queueName, data: { n: 1 } })),
  });
  const start = process.hrtime.bigint();
  await producer.addBulk(Array.from({ length: flows }, tree));
  const added = Number(process.hrtime.bigint() - start) / 1e9;
  await finished;
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  const label = `bullmq flows [${await durability(admin)}]`;
  console.log(
    `${label.padEnd(34)} ${flows} flows × ${children + 1} jobs: ${total.toFixed(2).padStart(6)} s = ${(flows / total).toFixed(0).padStart(6)} flows/s (addBulk ${added.toFixed(2)} s, concurrency ${concurrency})`,
  );
  console.log(`BENCH flows.seconds=${total.toFixed(4)}`);
  await worker.close();
  await producer.close();
  admin.disconnect();
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e);
  process.exit(1);
});
