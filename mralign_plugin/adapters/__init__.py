"""Adapters to training frameworks: the only code that imports OpenRLHF (lazily, from CLI verbs)."""
