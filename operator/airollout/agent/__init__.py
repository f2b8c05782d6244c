"""The agent interface: `airollout mcp` serves the Model Context Protocol so an agent can drive rollouts.

It acts with the caller's kubeconfig, so Kubernetes RBAC decides what an agent may do, and every action goes
through the same annotation contract as `kubectl annotate`. Nothing here is loaded by the operator.
"""
