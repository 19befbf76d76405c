"""The data stages: finding and decoding videos, the split rules, the frames files and their extraction, worker processes, the sample clips."""
