"""Measurement layer: size, latency (timed interleaved), torch.compile variants, graph breaks and
the side-by-side benchmark of the chain's models. Depends on training, models, data and core."""
