"""From frames to codes: patches, the k-means codebook, code grids and their encoding."""
