"""AlphaPulse: declarative market-data pipelines over a binary TLV wire protocol."""

__version__ = "0.1.0"
