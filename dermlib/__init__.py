"""dermlib: synthetic clinical notes for multimodal dermatology (companion to Marini et al., arXiv 2511.21827)."""

__version__ = "0.1.0"
