"""Replay or sweep simulation seeds: python -m controller.sim --seed N [--count K]."""

from __future__ import annotations

import argparse
import sys
import time

from .harness import SimConfig, SimFailure, run_seed

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--count", type=int, default=1, help="number of seeds to run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one SimConfig field (as printed by a failing run)",
    )
    args = parser.parse_args(argv)
    fields = SimConfig.__dataclass_fields__
    overrides: dict[str, object] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields or name == "seed":
            parser.error(f"unknown field {name!r}")
        kind = type(getattr(SimConfig(seed=0), name))
        overrides[name] = kind(value)
    failures = 0
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.count):
        try:
            result = run_seed(seed, **overrides)
        except SimFailure as exc:
            failures += 1
            print(exc, file=sys.stderr)
            continue
        if args.count == 1:
            print(result)
    elapsed = time.perf_counter() - started
    print(f"{args.count - failures} passed, {failures} failed in {elapsed:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
