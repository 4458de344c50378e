"""LoRA fine-tuning on a version, and train-and-compare of two versions."""
