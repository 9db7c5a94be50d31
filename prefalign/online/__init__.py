"""Online alignment: the policy's own samples, scored, as training data (rollout source, scorers, pair rules)."""
