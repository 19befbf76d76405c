"""The one error type a user should see: a readable message naming a file or a key."""


class VideoLMError(Exception):
    """Bad input (file, folder, parameter): the message says which and what is expected."""
