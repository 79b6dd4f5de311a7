"""The rollout reward every framework adapter shares: the scorer (transition mode) and the implicit process reward."""

# The environment variable naming the reward config (recipes/reward.yaml) that the OpenRLHF reward file and
# the verl adapter load in the processes the frameworks start.
CONFIG_ENV = "MRALIGN_REWARD_CONFIG"
