"""The models over code grids (rCNN, rNN), their chunked loss, the pixel decoder, and their checkpoints."""
