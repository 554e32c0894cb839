"""Sans-IO core of ``source.coinbase``: venue parsing and books, no sockets, no clocks.

Private to the Coinbase kind (the leading underscore keeps it out of kind discovery). The node
file (``nodes/coinbase.py``) is the I/O edge; tests and benchmarks drive these classes directly
with captured frames.
"""

from nodes._coinbase._advanced import AdvancedTradeFeed
from nodes._coinbase._book import Book
from nodes._coinbase._exchange import ExchangeFeed
from nodes._coinbase._feed import Feed, parse_time_ns

__all__ = ["AdvancedTradeFeed", "Book", "ExchangeFeed", "Feed", "parse_time_ns"]
