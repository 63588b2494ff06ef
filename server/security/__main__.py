"""`python -m server.security new-key NAME --models digits 'text_*' [--admin] [--rate R]`

Prints a new API key (once: the server never stores it) and the keys file entry that
holds its digest. `digest` prints the digest of a key read from standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from server.security.keys import digest, new_key


def _entry(args: argparse.Namespace, sha: str) -> str:
    fields = {"name": args.name, "sha256": sha, "models": args.models, "admin": args.admin}
    if args.rate is not None:
        fields["rate"] = args.rate
    if args.burst is not None:
        fields["burst"] = args.burst
    # JSON is YAML: one flow-style list item, safe to paste under `keys:`.
    return "  - " + json.dumps(fields)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.security")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("new-key", help="make an API key and its keys file entry")
    make.add_argument("name", help="the key's name, shown in logs and errors")
    make.add_argument("--models", nargs="+", required=True, help="names or wildcards; '*': all")
    make.add_argument("--admin", action="store_true", help="may use the repository RPCs")
    make.add_argument("--rate", type=float, help="requests per second (default: the server's)")
    make.add_argument("--burst", type=int, help="bucket size (default: the server's)")
    commands.add_parser("digest", help="the SHA-256 digest of a key read from stdin")
    args = parser.parse_args(argv)
    if args.command == "digest":
        print(digest(sys.stdin.readline().strip()))
        return 0
    key = new_key()
    print(f"# API key '{args.name}': give it to its holder; it is not shown again", file=sys.stderr)
    print(key)
    print("# keys file entry (under `keys:`):", file=sys.stderr)
    print(_entry(args, digest(key)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
