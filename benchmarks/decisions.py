"""How often each kind of guardrail rolls back a healthy release, and how often it catches a real regression.

The same simulated traffic (1 % errors, a 5 % canary, a 10-minute stage, a look every 30 s) judged two ways:
today's threshold guardrails (`judge` on a 5-minute window rate, the README's ``max: 0.015`` with
``maxIncreaseOverControl: 0.2``, and ``maxIncreaseOverControl: 0.5`` alone) and the anytime-valid comparison
(`assess`, alpha 0.05, planned for a 2x error rate at 80 % power, extended twice then reverted when its
planned sample is not reached). The traffic sweep shows up to which traffic the thresholds roll back more
than 5 % of healthy releases. docs/decisions.md quotes these figures.

    .venv/bin/python benchmarks/decisions.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The simulation harness lives beside the simulation tests that share it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.simulation.rollouts import (
    PROMOTED,
    REVERTED,
    ROLLED_BACK,
    Check,
    Errors,
    Stage,
    percent,
    simulate,
    threshold_rollbacks,
)

from airollout.guardrails.sequential import Margin, design
from airollout.model.spec import Guardrail

ALPHA = 0.05
SHARE = 0.05
BASELINE = 0.01
MINUTES = 10
QUERY = (
    'sum(rate(ai_errors_total{variant="{{variant}}"}[5m])) / sum(rate(ai_requests_total{variant="{{variant}}"}[5m]))'
)
THRESHOLDS = {
    "max 0.015 + 20%": Guardrail.model_validate(
        {"name": "error-rate", "query": QUERY, "max": 0.015, "maxIncreaseOverControl": 0.2}
    ),
    "+50% only": Guardrail.model_validate({"name": "error-rate", "query": QUERY, "maxIncreaseOverControl": 0.5}),
}
TRAFFIC = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def _row(cells: list[str]) -> str:
    return f"| {' | '.join(cells)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    runs = parser.parse_args().runs
    plan = design(
        BASELINE,
        BASELINE * (1 - BASELINE),
        proportion=True,
        detect=Margin(relative=1.0),
        margin=Margin(),
        candidate_share=SHARE,
        alpha=ALPHA,
    )
    print(f"1% errors, {percent(SHARE)} canary, {MINUTES}-minute stage, a look every 30 s, {runs} runs per row")
    print(f"comparison planned for 2x errors: {plan.required_candidate_n:.0f} candidate requests\n")
    header = ["rps", "harm", *(f"threshold {name}" for name in THRESHOLDS), "comparison: back / promoted / reverted"]
    print(_row(header))
    print(_row(["---"] * len(header)))
    worst: dict[str, int] = {}
    for harm in (1.0, 2.0):
        for rps in TRAFFIC:
            seed = rps * 10 + int(harm)
            rates = {
                name: threshold_rollbacks(
                    g, rps=rps, share=SHARE, error_rate=BASELINE, minutes=MINUTES, runs=runs, seed=seed, harm=harm
                )
                for name, g in THRESHOLDS.items()
            }
            outcomes = simulate(
                Errors(rps, {"errors": BASELINE}, harm={"errors": harm}),
                [Check("errors", True, ALPHA, (plan,))],
                [Stage(SHARE, MINUTES)],
                runs=runs,
                seed=seed,
            )
            comparison = " / ".join(percent(outcomes.rate(r)) for r in (ROLLED_BACK, PROMOTED, REVERTED))
            print(_row([str(rps), f"{harm:g}x", *(percent(r) for r in rates.values()), comparison]))
            if harm == 1.0:
                for name, rate in rates.items():
                    if rate > ALPHA:
                        worst[name] = max(worst.get(name, 0), rps)
    for name, rps in worst.items():
        print(f"\nthreshold {name} rolls back more than 5% of healthy releases up to {rps} rps (5% canary)")


if __name__ == "__main__":
    main()
