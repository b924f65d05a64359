"""Gymnasium text environments, the action parser and the level files they read."""
