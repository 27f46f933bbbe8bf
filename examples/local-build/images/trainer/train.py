"""A toy training run: fit y = 3x + 2 by stochastic gradient descent.

Standard library only. Configured by the environment:

    RUN_NAME        the run's folder under RUNS_DIR (default: "default")
    RUNS_DIR        where runs are written (default: /home/work/runs)
    LEARNING_RATE   SGD step size (default: 0.05)
    STEPS           number of steps (default: 1000)

Writes RUNS_DIR/RUN_NAME/metrics.jsonl (one line every 100 steps) and
checkpoint.json (the parameters, rewritten atomically every 100 steps).
"""

import json
import os
import random
import sys


def main() -> int:
    run_name = os.environ.get("RUN_NAME", "default")
    runs_dir = os.environ.get("RUNS_DIR", "/home/work/runs")
    learning_rate = float(os.environ.get("LEARNING_RATE", "0.05"))
    steps = int(os.environ.get("STEPS", "1000"))

    out = os.path.join(runs_dir, run_name)
    os.makedirs(out, exist_ok=True)

    rng = random.Random(0)
    w, b = 0.0, 0.0
    with open(os.path.join(out, "metrics.jsonl"), "w", encoding="utf-8") as metrics:
        for step in range(1, steps + 1):
            x = rng.uniform(-1.0, 1.0)
            y = 3.0 * x + 2.0 + rng.gauss(0.0, 0.1)
            error = (w * x + b) - y
            w -= learning_rate * 2.0 * error * x
            b -= learning_rate * 2.0 * error
            if step % 100 == 0 or step == steps:
                record = {"step": step, "loss": error * error, "w": w, "b": b}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                save_checkpoint(out, {"step": step, "w": w, "b": b})
                print(f"{run_name}: step {step} loss {error * error:.5f}")

    print(f"{run_name}: done, w={w:.3f} b={b:.3f}")
    return 0


def save_checkpoint(out: str, state: dict) -> None:
    tmp = os.path.join(out, "checkpoint.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(out, "checkpoint.json"))


if __name__ == "__main__":
    sys.exit(main())
