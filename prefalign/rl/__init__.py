"""Reinforcement learning with a KL leash (prefalign rl): rollouts, advantages, policy objective."""
