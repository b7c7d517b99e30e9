// What the BullMQ benchmarks read of the Redis under test.

// What the Redis under test promises about durability (as dwa's rows say it).
async function durability(redis) {
  const get = async (name) => (await redis.config("GET", name))[1] || "";
  if ((await get("appendonly")) === "yes") return `AOF fsync ${await get("appendfsync")}`;
  return (await get("save")) ? "RDB snapshots only" : "no persistence";
}

// Seconds of CPU the Redis server has used (user + system).
async function redisCpu(redis) {
  const info = await redis.info("cpu");
  const user = info.match(/used_cpu_user:([\d.]+)/);
  const sys = info.match(/used_cpu_sys:([\d.]+)/);
  return (user ? Number(user[1]) : 0) + (sys ? Number(sys[1]) : 0);
}

async function commands(redis) {
  const info = await redis.info("stats");
  const m = info.match(/total_commands_processed:(\d+)/);
  return m ? Number(m[1]) : 0;
}

module.exports = { durability, redisCpu, commands };
