"""The rollout reward every framework adapter shares: the scorer (transition mode) and the implicit process reward."""
