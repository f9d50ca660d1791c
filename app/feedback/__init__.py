"""Feedback: ground truth joined to predictions, online quality, A/B statistics, bandits."""
