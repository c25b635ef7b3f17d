"""magray's version: a leaf, so that modules deep in the package (a backup manifest records
it) need not import the package, whose ``__init__`` leads to Memory."""

__version__ = "0.1.0"
