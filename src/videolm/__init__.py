"""videolm: video (language) modeling over k-means patch codes."""
