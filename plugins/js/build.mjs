// Builds every JavaScript plugin (a folder here with index.js and
// plugin.json) into a WebAssembly component with componentize-js, offline.
// Usage: node build.mjs OUT_DIR [PLUGIN_DIR...]
import { componentize } from "@bytecodealliance/componentize-js";
import { readdir, readFile, writeFile, copyFile, stat } from "node:fs/promises";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const wit = resolve(here, "../../wit");
const [outDir, ...only] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node build.mjs OUT_DIR [PLUGIN_DIR...]");
  process.exit(2);
}

const hasManifest = (d) => stat(join(d, "plugin.json")).then(() => true, () => false);
const candidates = only.length
  ? only.map((d) => resolve(d))
  : (await readdir(here, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && e.name !== "node_modules")
      .map((e) => join(here, e.name));
const dirs = [];
for (const d of candidates) if (await hasManifest(d)) dirs.push(d);

const newest = async (paths) => {
  let t = 0;
  for (const p of paths) {
    const s = await stat(p);
    if (s.isDirectory()) {
      const entries = await readdir(p);
      t = Math.max(t, await newest(entries.map((e) => join(p, e))));
    } else t = Math.max(t, s.mtimeMs);
  }
  return t;
};

for (const dir of dirs) {
  const manifest = JSON.parse(await readFile(join(dir, "plugin.json"), "utf8"));
  const m = /^dwa:plugin\/([a-z-]+)@/.exec(manifest.world ?? "");
  if (!m) throw new Error(`${dir}/plugin.json: world ${manifest.world} is not dwa:plugin/<world>@<version>`);
  const out = join(resolve(outDir), `${manifest.name}.wasm`);
  const built = await stat(out).then((s) => s.mtimeMs, () => 0);
  if (built > (await newest([dir, wit]))) {
    console.log(`js plugin ${manifest.name} is up to date`);
  } else {
    const { component } = await componentize({
      sourcePath: join(dir, "index.js"),
      witPath: wit,
      worldName: m[1],
      // No wasi:http: the host offers HTTP through its own checked interface.
      disableFeatures: ["http", "fetch-event"],
    });
    await writeFile(out, component);
    console.log(`js plugin ${manifest.name}: ${(component.length / 1e6).toFixed(1)} MB`);
  }
  await copyFile(join(dir, "plugin.json"), join(resolve(outDir), `${manifest.name}.json`));
}
