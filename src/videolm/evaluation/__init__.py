"""Measuring a trained model: likelihood scoring, baselines, test clips, generation, filling, optical flow, pictures."""
