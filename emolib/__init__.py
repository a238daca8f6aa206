"""emolib: the helper package behind the emotion-neurons experiment book."""

__version__ = "0.1.0"
