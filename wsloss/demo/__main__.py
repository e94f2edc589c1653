"""python -m wsloss.demo [--quick] [--device cuda] [--seeds N] [--out DIR]: see wsloss.demo."""
import argparse
import sys

from . import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsloss.demo", description=(run.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", default="wsloss-demo", help="output folder (default: ./wsloss-demo)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="a tiny run of every row, for tests (seconds)")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--schedule", choices=["short", "long"], default=None,
                        help="short: 450 steps per row (default on cpu); "
                             "long: 1500 steps, closer to convergence (default on cuda)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per row (overrides --schedule)")
    parser.add_argument("--seed", type=int, default=0, help="the data's seed and the first training seed")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every row with N training seeds; the table gives mean ± sd (default: 1)")
    parser.add_argument("--validation", action="store_true",
                        help="measure on 256 images held out of the training set, to choose settings on")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one of the settings (wsloss.demo.SETTINGS), e.g. --set crf_weight=2")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress (default: a bar per row on a terminal, plain lines in a log)")
    args = parser.parse_args(argv)
    try:
        overrides = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            try:
                overrides[name] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"--set takes NAME=NUMBER, got {item!r}")
        results = run(out=args.out, device=args.device, quick=args.quick, schedule=args.schedule, steps=args.steps,
                      seed=args.seed, rows=args.rows.split(",") if args.rows else None,
                      progress=not args.no_progress, seeds=args.seeds, validation=args.validation,
                      overrides=overrides)
    except (ValueError, TypeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with open(results["paths"]["markdown"]) as f:
        print(f.read())
    print("wrote " + ", ".join(results["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
