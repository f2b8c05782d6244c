"""What tests, benchmarks and the demo share to drive the operator: one way to start it and to write an AIRollout.

Waiting lives a layer below, in `airollout_testbed.waiting`, because the sandbox waits for its parts too.
"""

from airollout_testbed.harness.manifests import CRD, install_crd, rollout_manifest
from airollout_testbed.harness.operator import OperatorProcess

__all__ = ["CRD", "OperatorProcess", "install_crd", "rollout_manifest"]
