"""The warm parent's entry point: ``python -m pytest_mlestimate.profiling.warm_parent --warm FD --parent PID``.

Apart from ``worker`` so that the profiling child's own module never imports the warm parent's loop.
"""

from __future__ import annotations

import argparse
import sys

from pytest_mlestimate.profiling.warm_start import serve
from pytest_mlestimate.profiling.worker import die_with


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mlestimate.profiling.warm_parent")
    parser.add_argument("--parent", type=int, required=True, help="the process this one must not outlive")
    parser.add_argument("--warm", type=int, required=True, metavar="FD", help="the socket to take requests on")
    args = parser.parse_args(argv[1:])
    die_with(args.parent)
    return serve(args.warm, args.parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
