"""Pulls each reference named on the command line, one after another, with the ORAS Python SDK."""

import sys
import tempfile

import oras.client


def main() -> None:
    registry = sys.argv[1]
    client = oras.client.OrasClient(hostname=registry, insecure=True)
    with tempfile.TemporaryDirectory() as out:
        for target in sys.argv[2:]:
            client.pull(target=target, outdir=out)


if __name__ == "__main__":
    main()
