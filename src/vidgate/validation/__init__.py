"""Checks an upload must pass. This issue's part: limits and the filename policy;
content checks (magic bytes, container probe, security scan) plug in here next."""

from vidgate.validation.filenames import SafeFilename, sanitize_filename
from vidgate.validation.limits import UploadLimits

__all__ = ["SafeFilename", "UploadLimits", "sanitize_filename"]
