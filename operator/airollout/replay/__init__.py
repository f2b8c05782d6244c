"""`airollout replay`: a rollout's policy run against past Prometheus data, to tune guardrails on past releases.

`replaying` runs the operator's own analysis and planner at the moments the operator would have decided,
writing nothing anywhere; `report` prints the result; `command` is the CLI, imported by `airollout` at start,
which loads the rest only when run. The operator never imports this package.
"""
