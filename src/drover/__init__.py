"""drover: from a base language model to a tuned, evaluated assistant.

Importing this package is cheap on purpose: torch, transformers and peft are imported
lazily inside the stages that need them, so `drover --help` answers at once.
"""

__version__ = "0.1.0"
