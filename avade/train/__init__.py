"""The one training loop (Algorithm 1), its checkpoints and its run directory."""
