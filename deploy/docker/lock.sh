#!/usr/bin/env bash
# Refreshes deploy/docker/constraints.txt, the pins of every Python package the image
# installs: builds a scratch copy of the tracked files with no pins at all (so the newest
# versions that pyproject.toml and models/requirements-nodeps.txt allow), then records
# what landed in both environments, the build tools' and the runtime's.
#
#   deploy/docker/lock.sh        (from anywhere in the repository; takes a few minutes)
set -euo pipefail

root=$(git rev-parse --show-toplevel)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
git -C "$root" ls-files -z --cached --others --exclude-standard | tar -C "$root" --null -T - -cf - | tar -C "$scratch/src" -xf -
: >"$scratch/src/deploy/docker/constraints.txt"
(cd "$scratch/src" && deploy/docker/build.sh "$scratch/venv" "$scratch/app" >&2)

{
	echo "# Every Python package in the image, pinned: written by deploy/docker/lock.sh, never by hand."
	echo "# deploy/docker/build.sh installs with these as PIP_CONSTRAINT."
	{
		"$scratch/src/.venv/bin/python" -m pip freeze --all --exclude-editable
		"$scratch/venv/bin/python" -m pip freeze --all --exclude v2-inference-server
	} | sort -fu | awk -F'==' '
		{ key = tolower($1); gsub(/[-_.]+/, "-", key) }
		key in seen { printf "lock.sh: %s pinned twice: %s and %s\n", $1, seen[key], $2 > "/dev/stderr"; failed = 1 }
		{ seen[key] = $2; print }
		END { exit failed }'
} >"$scratch/constraints.txt"
mv "$scratch/constraints.txt" "$root/deploy/docker/constraints.txt"
echo "wrote $root/deploy/docker/constraints.txt" >&2
