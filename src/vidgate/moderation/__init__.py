"""Moderation signals: the shipped explicit-content classifier, industry-standard video hashes
(vPDQ/PDQ) and matching them against banks of known hashes."""
