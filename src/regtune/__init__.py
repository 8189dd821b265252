"""regtune: register-augmented fine-tuning of Hugging Face transformer encoders."""

__version__ = "0.1.0"
