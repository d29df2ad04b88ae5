"""Prints hyperfine JSON results side by side, with each row's ratio to the anchor (first row)."""

import json
import statistics
import sys


def main() -> None:
    rows = []
    for path in sys.argv[1:]:
        with open(path) as f:
            rows.extend(json.load(f)["results"])
    anchor = statistics.median(rows[0]["times"])
    width = max(len(r["command"]) for r in rows)
    print(f"| {'command':<{width}} | median ms | mean ms ± sd | runs | ratio to anchor |")
    print(f"| {'-' * width} | ---: | ---: | ---: | ---: |")
    for r in rows:
        median = statistics.median(r["times"])
        print(
            f"| {r['command']:<{width}} | {median * 1e3:9.2f} | "
            f"{r['mean'] * 1e3:7.2f} ± {r['stddev'] * 1e3:5.2f} | {len(r['times']):4d} | "
            f"{median / anchor:6.2f}x |"
        )


if __name__ == "__main__":
    main()
