"""Trainer integrations: ``verl`` (compute_score / compute_score_async) and ``trl`` (RemoteReward)."""
