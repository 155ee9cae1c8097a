"""The one exception type the project raises for bad input (files, shapes, text, limits)."""


class QwenCpuError(Exception):
    """A problem with the user's input or environment, with a message naming it."""


class GGUFError(QwenCpuError):
    """A GGUF file that is malformed, truncated or unsupported; the message names field and offset."""
