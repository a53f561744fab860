class ModelError(Exception):
    """A model that cannot be trained or loaded as asked; the message says what to change."""
