"""Measurement layer: size, latency (timed side by side in rotating blocks), torch.compile variants,
graph breaks and the side-by-side benchmark of the chain's models. Depends on training, models,
data and core."""
