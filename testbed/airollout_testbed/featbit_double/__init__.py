"""A FeatBit server double: FeatBit's management API and SDK streaming protocol, for one environment.

Tests and the local sandbox use it where a real FeatBit cannot run. It follows FeatBit's
management API and data-sync protocol closely enough that FeatBit's own Python SDK connects to it
and evaluates flags, and it adds fault knobs for reliability tests.
"""

from airollout_testbed.featbit_double.double import DoubleConfig, FeatBitDouble
from airollout_testbed.featbit_double.faults import Faults

__all__ = ["DoubleConfig", "Faults", "FeatBitDouble"]
