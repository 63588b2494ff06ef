// Generates the TypeScript client code in src/gen/ from the repository's protos.
//
// buf compiles one directory tree, so the protos are first staged in build/proto/ with the
// layout their imports expect: inference/*.proto from protos/, google/api/ from the PyPI
// package googleapis-common-protos, grpc/health/v1/health.proto from the npm package
// grpc-health-check (gRPC's own copy). Then `buf generate` runs protoc-gen-es on them.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";
import { PROTOS_DIR, WEB_DIR, googleapisDir } from "./inputs.mjs";

const STAGE = join(WEB_DIR, "build/proto");
const require = createRequire(import.meta.url);
const healthPackage = dirname(require.resolve("grpc-health-check/package.json"));
const googleapis = googleapisDir();

/** [source, path under build/proto] */
const files = [
  ...readdirSync(join(PROTOS_DIR, "inference"))
    .filter((name) => name.endsWith(".proto"))
    .map((name) => [join(PROTOS_DIR, "inference", name), `inference/${name}`]),
  [join(googleapis, "google/api/annotations.proto"), "google/api/annotations.proto"],
  [join(googleapis, "google/api/http.proto"), "google/api/http.proto"],
  [join(googleapis, "google/api/httpbody.proto"), "google/api/httpbody.proto"],
  [join(healthPackage, "proto/health/v1/health.proto"), "grpc/health/v1/health.proto"],
];

rmSync(STAGE, { recursive: true, force: true });
for (const [source, target] of files) {
  mkdirSync(dirname(join(STAGE, target)), { recursive: true });
  copyFileSync(source, join(STAGE, target));
}

const bin = join(WEB_DIR, "node_modules/.bin");
execFileSync(join(bin, "buf"), ["generate", STAGE, "--template", "buf.gen.yaml"], {
  cwd: WEB_DIR,
  stdio: "inherit",
  env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH}` },
});
console.log(`generated src/gen/ from ${files.length} protos`);
