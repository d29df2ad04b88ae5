"""Splits a `ctr run` measured by hyperfine into what the shim spent on it and the rest.

Arguments: the shim's debug log (WASM_OCI_LOG_FILE), the container id, the anchor's hyperfine
JSON (runc), the run's, and how the run is named in the table. The shim logs `micros=` for each step of a container; the rest of
the run is containerd's and ctr's, and any runtime pays it.
"""

import json
import re
import statistics
import sys

STEPS = ("task created", "task started", "guest exited", "task deleted")


def median_ms(path: str) -> float:
    with open(path) as f:
        return statistics.median(json.load(f)["results"][0]["times"]) * 1000


def main() -> None:
    log, container, anchor_json, run_json, name = sys.argv[1:]
    pattern = re.compile(rf"({'|'.join(STEPS)}).*\bid={re.escape(container)}\b.*\bmicros=(\d+)")
    steps: dict[str, list[float]] = {s: [] for s in STEPS}
    with open(log) as f:
        for line in f:
            m = pattern.search(line)
            if m:
                steps[m.group(1)].append(int(m.group(2)) / 1000)
    runs = len(steps["task created"])
    if runs == 0:
        sys.exit(f"no timings for {container} in {log}")
    anchor, whole = median_ms(anchor_json), median_ms(run_json)
    shim = sum(sum(v) for v in steps.values()) / runs
    print()
    print(f"| one run, {name} (mean of {runs}) | ms | ratio to runc |")
    print("| --- | ---: | ---: |")
    for step in STEPS:
        print(f"| inside the shim: {step} | {statistics.mean(steps[step]):.2f} | |")
    print(f"| inside the shim, all steps | {shim:.2f} | {shim / anchor:.2f}x |")
    print(f"| the rest of the run's median: outside the shim's requests | {whole - shim:.2f} | "
          f"{(whole - shim) / anchor:.2f}x |")


if __name__ == "__main__":
    main()
