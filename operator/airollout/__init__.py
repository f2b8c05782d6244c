"""AIRollout: staged, guardrail-gated rollouts of AI features through FeatBit feature flags."""

__version__ = "0.1.0"
__all__ = ["__version__"]
