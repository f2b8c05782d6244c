"""`airollout demo`: the synthetic AI service and the scenario of two rollouts that runs on the sandbox."""
