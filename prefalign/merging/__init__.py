"""Model merging: several fine-tuned models (or runs) of one architecture into one set of weights."""
