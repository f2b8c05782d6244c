"""AIRollout's test rig: everything that runs the operator somewhere real without being the operator.

A distribution of its own (testbed/), never installed in the image: the sandbox (`airollout sandbox`), the
FeatBit server double, the demo (`airollout demo`) and the harness that tests and benchmarks share.
"""
