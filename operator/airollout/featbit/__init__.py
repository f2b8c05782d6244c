"""Everything AIRollout knows about FeatBit.

`targeting` turns a rollout stage into the targeting a flag must carry (pure, no I/O); `client` is the
only code that talks to FeatBit's management API; `errors` lists the ways that can fail.
"""

from airollout.featbit.client import FeatBitClient
from airollout.featbit.errors import (
    FeatBitError,
    FeatBitRejected,
    FeatBitUnavailable,
    FlagNotFound,
    InvalidToken,
    PermissionDenied,
    RevisionConflict,
    SegmentNotFound,
    VariationNotFound,
)
from airollout.featbit.targeting import (
    AUDIENCE_RULE_ID,
    GRANTED_RULE_ID,
    MANAGED_RULE_PREFIX,
    Exposure,
    build_targeting,
    fingerprint,
    targeting_of,
)

__all__ = [
    "AUDIENCE_RULE_ID",
    "GRANTED_RULE_ID",
    "MANAGED_RULE_PREFIX",
    "Exposure",
    "FeatBitClient",
    "FeatBitError",
    "FeatBitRejected",
    "FeatBitUnavailable",
    "FlagNotFound",
    "InvalidToken",
    "PermissionDenied",
    "RevisionConflict",
    "SegmentNotFound",
    "VariationNotFound",
    "build_targeting",
    "fingerprint",
    "targeting_of",
]
