"""The command line the bench gives each comparison script (the SDK baseline
and the floor): where the simulated API and the HEC double listen."""

from __future__ import annotations

import argparse


def parse_arguments(
    description: str | None, argv: list[str] | None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", required=True, help="ending in /api/1.0")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--hec-url", required=True)
    parser.add_argument("--hec-token", required=True)
    return parser.parse_args(argv)
