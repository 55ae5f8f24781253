"""Reproduce, with one `dvc repro`, the results of an introductory deep-learning course."""
