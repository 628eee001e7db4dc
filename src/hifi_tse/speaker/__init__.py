"""Speaker embeddings: pretrained speaker encoders re-implemented on our own code."""
