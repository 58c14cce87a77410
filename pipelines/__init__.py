"""Pipeline definitions (train_augment, regenerate_tail), profiles, cluster settings, local run and submit."""
