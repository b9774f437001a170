"""The plain Prefect anchor: a flow that does nothing, served by `prefect serve` semantics.

Run as a script (no project imports): `python noop_flow.py NAME LIMIT`.
"""

import sys

from prefect import flow


@flow(name="bench-reactions-noop")
def noop() -> None:
    """Does nothing: what a run costs Prefect alone."""


if __name__ == "__main__":
    noop.serve(name=sys.argv[1], limit=int(sys.argv[2]), print_starting_message=False)
