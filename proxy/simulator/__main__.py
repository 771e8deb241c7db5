"""``python -m proxy.simulator``: the ``simulate`` subcommand without the top-level CLI."""

import argparse
import sys

from proxy.simulator.cli import configure_parser, run


def main() -> int:
    """Parse the simulate options from argv and serve."""
    parser = argparse.ArgumentParser(prog="python -m proxy.simulator", description=__doc__)
    configure_parser(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
