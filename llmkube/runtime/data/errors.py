class DataError(Exception):
    """The dataset cannot be trained on; the message says what to change."""
