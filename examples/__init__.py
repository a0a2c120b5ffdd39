"""Examples of bringing your own model (see README, "Compress your own model")."""
