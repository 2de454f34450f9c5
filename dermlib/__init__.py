"""dermlib: synthetic clinical notes for multimodal dermatology (companion to Marini et al., arXiv 2511.21827)."""

__version__ = "0.1.0"

from dermlib.logs import log_to_file_from_env as _log_to_file_from_env  # noqa: E402

_log_to_file_from_env()  # a notebook kernel the pipeline started: dermlib's INFO lines go to its log file
