"""Training the model (and the pixel decoder): crops, the loop, DDP, the resume state."""
