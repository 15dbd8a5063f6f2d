"""Exceptions raised at the package's boundaries; each message says what to do next."""


class FerError(Exception):
    """Base class for every error this package raises on purpose."""


class ImageError(FerError, ValueError):
    """An image could not be read or has an unusable shape or type."""


class ModelError(FerError):
    """A model file is missing, unreadable or inconsistent with its JSON."""


class DataError(FerError):
    """A dataset folder or corrections file cannot be used."""


class VideoError(FerError, ValueError):
    """A video could not be read or written, or is outside the limits set for it."""
