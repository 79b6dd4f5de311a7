"""Meta-reasoning annotation: the rules tagger, the LLM annotator (App. F prompt) and the ensemble (§3.1.2)."""
