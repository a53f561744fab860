class ExportError(Exception):
    """An export refused or failed, with a message that says what to change."""
