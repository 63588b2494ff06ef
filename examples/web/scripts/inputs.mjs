// Where the build finds what it does not own: the repository's protos, and files that ship
// in Python packages the repository already installs (.venv, `make install`).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_DIR = resolve(WEB_DIR, "../..");
export const PROTOS_DIR = join(REPO_DIR, "protos");

/** The Python that has the repository's packages: $PYTHON, else the repository's .venv. */
function python() {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(REPO_DIR, ".venv/bin/python");
  if (existsSync(venv)) return venv;
  throw new Error("no .venv: run `make install` in the repository root, or set PYTHON");
}

function pythonPrint(code) {
  return execFileSync(python(), ["-c", code], { encoding: "utf8" }).trim();
}

/** The directory holding google/api/annotations.proto (PyPI googleapis-common-protos). */
export function googleapisDir() {
  return (
    process.env.GOOGLEAPIS_DIR ??
    pythonPrint("import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))")
  );
}
