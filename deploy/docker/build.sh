#!/usr/bin/env bash
# Builds everything the container image serves, from a checkout, with the Makefile's own
# recipes. The Dockerfile's build stage runs it, and tests/integration/test_dockerfile.py
# runs it too, so that the image's recipe is tested without a Docker engine.
#
#   deploy/docker/build.sh VENV APP
#
# Run from the repository root. Writes:
#   .venv/     the build tools (grpcio-tools, scikit-learn, skl2onnx, ...): `make install`
#   VENV       a fresh virtual environment with the package and its runtime dependencies only
#   APP        what the server and the gateway read at run time, the image's /app:
#              models/ (the default repository), build/gateway/ (descriptor set, OpenAPI),
#              web/ (the gRPC-web demo page)
# Every pip install is pinned by deploy/docker/constraints.txt (docs/deployment.md says
# how to refresh it); npm installs what examples/web/package-lock.json says.
set -euo pipefail

if [[ $# -ne 2 ]]; then
	echo "usage: $0 VENV APP" >&2
	exit 2
fi
venv=$1
app=$2
export PIP_CONSTRAINT="$PWD/deploy/docker/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The runtime environment: a fresh venv with the runtime dependencies only, nothing from
# the build tools. They need nothing that make builds, so they install meanwhile.
python3 -m venv --upgrade-deps "$venv" # pip and setuptools at their pinned versions
requirements=$(mktemp)
dependencies=""
trap 'rm -f "$requirements"; [[ -z $dependencies ]] || kill "$dependencies" 2>/dev/null || true' EXIT
python3 -c 'import tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' >"$requirements"
"$venv/bin/python" -m pip install --quiet -r "$requirements" &
dependencies=$!

# The generated stubs (inference/), the model repository, the gateway's descriptor set
# and OpenAPI document, and the web bundle: the same targets as `make run` builds, with
# the build tools in .venv.
make protos models gateway web

# Then the package itself, a regular (not editable) install that now includes the
# generated `inference` package.
wait "$dependencies"
dependencies=""
"$venv/bin/python" -m pip install --quiet --no-deps .
"$venv/bin/python" -m pip check

# The run-time files. Model directories only: not build.py, its README or caches.
mkdir -p "$app/models" "$app/build"
for model in models/*/; do
	name=$(basename "$model")
	if [[ $name != __pycache__ ]]; then
		cp -R "$model" "$app/models/$name"
	fi
done
cp -R build/gateway "$app/build/gateway"
cp -R examples/web/dist "$app/web"
