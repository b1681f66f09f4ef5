"""One module per benchmark; registered by name in `drover.evaluate.registry`."""
