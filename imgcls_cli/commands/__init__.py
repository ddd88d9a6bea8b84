"""The Hydra apps: each command composes its config and hands plain values to the engine."""
