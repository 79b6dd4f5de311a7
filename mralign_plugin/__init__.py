"""MR-ALIGN for OpenRLHF: meta-reasoning informed factuality alignment (arXiv 2510.24794)."""

__version__ = "0.1.0"
