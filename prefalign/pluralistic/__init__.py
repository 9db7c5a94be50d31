"""Whose preferences count: methods that serve several objectives or users with one model (Rewards-in-Context
here; PAL lives with the reward models and MODPO with the losses)."""
