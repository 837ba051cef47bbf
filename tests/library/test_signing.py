"""Signed URLs: bound to the video, its owner and the expiry; altered, expired or foreign ones fail."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from vidgate.config import LibrarySettings
from vidgate.errors import InvalidUrlSignature, UrlExpired
from vidgate.library.signing import UrlSigner

NOW = 1_800_000_000.0


def parts(url: str) -> tuple[int, str]:
    query = parse_qs(urlsplit(url).query)
    return int(query["exp"][0]), query["sig"][0]


def test_a_signed_url_verifies_for_its_video_and_owner_until_it_expires() -> None:
    signer = UrlSigner(b"k" * 32, ttl_seconds=600)
    urls = signer.urls("video-1", "alice", now=NOW)
    exp, sig = parts(urls.content)
    assert NOW + 600 <= exp < NOW + 660 and exp % 60 == 0  # rounded up to the minute
    assert {parts(u) for u in (urls.poster, urls.storyboard, urls.storyboard_index)} == {(exp, sig)}
    assert urls.content.startswith("/v1/videos/video-1/content?")
    signer.verify("video-1", "alice", exp, sig, now=NOW)
    signer.verify("video-1", "alice", exp, sig, now=exp)  # the last second still works
    with pytest.raises(UrlExpired):
        signer.verify("video-1", "alice", exp, sig, now=exp + 1)
    for video, owner, expires, signature in (
        ("video-2", "alice", exp, sig),  # another video
        ("video-1", "bob", exp, sig),  # another owner
        ("video-1", "alice", exp + 60, sig),  # a later expiry
        ("video-1", "alice", exp, sig[:-1] + ("A" if sig[-1] != "A" else "B")),
        ("video-1", "alice", exp, ""),
        ("video-1", "alice", exp, "ü" * 43),
    ):
        with pytest.raises(InvalidUrlSignature):
            signer.verify(video, owner, expires, signature, now=NOW)


def test_the_secret_comes_from_settings_and_another_secret_does_not_verify() -> None:
    one = UrlSigner.from_settings(LibrarySettings(url_secret=SecretStr("one"), url_ttl_seconds=60))
    same = UrlSigner.from_settings(LibrarySettings(url_secret=SecretStr("one")))
    other = UrlSigner.from_settings(LibrarySettings(url_secret=SecretStr("two")))
    exp, sig = parts(one.urls("v", "u", now=NOW).content)
    same.verify("v", "u", exp, sig, now=NOW)
    with pytest.raises(InvalidUrlSignature):
        other.verify("v", "u", exp, sig, now=NOW)
    unset = UrlSigner.from_settings(LibrarySettings())  # a random one for this process
    exp, sig = parts(unset.urls("v", "u", now=NOW).content)
    UrlSigner.from_settings(LibrarySettings()).verify("v", "u", exp, sig, now=NOW)
    with pytest.raises(InvalidUrlSignature):
        one.verify("v", "u", exp, sig, now=NOW)
