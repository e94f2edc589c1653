"""python -m wsloss.demo.summary RUN_DIR RUN_DIR [...]: the mean and spread of several demo runs
(one per seed; results.json in each) as a markdown table."""
import json
import sys

from .report import summarize

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m wsloss.demo.summary RUN_DIR RUN_DIR [...]  (results.json in each)")
    runs = []
    for folder in sys.argv[1:]:
        with open(f"{folder}/results.json") as f:
            runs.append(json.load(f))
    print(summarize(runs))
