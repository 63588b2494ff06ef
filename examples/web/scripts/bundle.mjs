// Bundles the page into dist/, every file of which the gateway serves under /web/:
// index.html, style.css, app.js (esbuild: the page's TypeScript and its npm packages).
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";
import { WEB_DIR } from "./inputs.mjs";

const DIST = join(WEB_DIR, "dist");
const SRC = join(WEB_DIR, "src");

rmSync(DIST, { recursive: true, force: true });
mkdirSync(DIST);
await build({
  entryPoints: [join(SRC, "main.ts")],
  outfile: join(DIST, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
});
for (const name of ["index.html", "style.css"]) copyFileSync(join(SRC, name), join(DIST, name));
for (const name of readdirSync(DIST).sort()) {
  console.log(`dist/${name.padEnd(24)} ${(statSync(join(DIST, name)).size / 1024).toFixed(0)} KiB`);
}
