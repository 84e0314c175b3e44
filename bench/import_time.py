"""How long loading the code location takes, next to importing the ML stack it defers.

Each import runs in a fresh interpreter, best of three, both measured in this one run.
Last line: one JSON object with `definitions_s`, `heavy_stack_s` and `ratio`.
"""

import json
import subprocess
import sys
import time

DEFINITIONS = "import mlplatform.definitions as d; d.defs()"
HEAVY = "import feast, evidently, mlflow, lightgbm, optuna, sklearn"


def best_of(code: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    baseline = best_of("pass")
    definitions = best_of(DEFINITIONS) - baseline
    heavy = best_of(HEAVY) - baseline
    print(f"interpreter start {baseline:.2f} s (subtracted from both)")
    print(f"definitions load  {definitions:.2f} s")
    print(f"heavy ML stack    {heavy:.2f} s")
    print(
        json.dumps(
            {
                "definitions_s": round(definitions, 3),
                "heavy_stack_s": round(heavy, 3),
                "ratio": round(heavy / definitions, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
