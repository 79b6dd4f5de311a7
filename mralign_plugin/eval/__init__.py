"""Evaluation and analysis: the paper's metrics and its transition figures."""
