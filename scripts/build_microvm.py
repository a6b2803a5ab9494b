#!/usr/bin/env python3
"""Build the edge agent's microvm image (Debian cloud kernel + busybox initramfs); print it.

    .venv/bin/python scripts/build_microvm.py [--cache DIR] [--json]   # default .cache/microvm

Needs apt's package lists (apt-get update) and busybox-static; installs nothing on the host.
The build is cached under DIR/<key>, key = hash of its inputs; run again, it only checks the
cache (docs/edge-agent.md). Exit 1 with one line if a step fails.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from edge_agent.microvm import DEFAULT_CACHE, ImageError, build  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", action="store_true", help="print the paths as JSON")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        image = build(args.cache)
    except ImageError as e:
        print(f"build_microvm: error: {e}", file=sys.stderr)
        return 1
    took_s = time.monotonic() - started
    if args.json:
        print(json.dumps({"kernel": str(image.kernel), "initrd": str(image.initrd),
                          "key": image.key, "seconds": round(took_s, 2)}))
    else:
        print(f"{image.kernel}\n{image.initrd}\nkey {image.key} ({took_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
