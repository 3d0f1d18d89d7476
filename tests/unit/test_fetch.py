"""tasks.fetch pure parts: address policy, URL and content checks, retry timing, config."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from PIL import Image
from pydantic import ValidationError
from yarl import URL

from tasks.fetch import FetchConfig
from tasks.http_retry import retry_after_seconds
from tasks.poster_checks import MAX_PIXELS, check_image, sniff_format
from tasks.rejections import Rejected
from tasks.url_guard import AddressPolicy, check_url
from tests.fetch_helpers import png_bomb, poster_bytes

NO_ALLOW = AddressPolicy.from_allow_list([])


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200",
     "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "224.0.0.1"],
)
def test_private_loopback_link_local_and_metadata_addresses_are_refused(address: str) -> None:
    assert not NO_ALLOW.permits("example.com", address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_are_permitted(address: str) -> None:
    assert NO_ALLOW.permits("example.com", address)


def test_allow_list_takes_hosts_ips_and_networks() -> None:
    policy = AddressPolicy.from_allow_list(["127.0.0.1", "10.0.0.0/8", "Mirror.Local."])
    assert policy.permits("anything", "127.0.0.1")
    assert policy.permits("anything", "10.9.8.7")
    assert policy.permits("mirror.local", "192.168.1.1")
    assert not policy.permits("anything", "127.0.0.2")
    assert not policy.permits("anything", "169.254.169.254")


@pytest.mark.parametrize(
    ("url", "outcome"),
    [("file:///etc/passwd", "bad_scheme"), ("ftp://example.com/a.jpg", "bad_scheme"),
     ("data:image/jpeg;base64,AAAA", "bad_scheme"), ("http:///nohost", "bad_scheme"),
     ("http://169.254.169.254/latest/", "blocked_address"), ("http://[::1]/a", "blocked_address"),
     ("http://10.0.0.1/a.jpg", "blocked_address")],
)
def test_check_url_refuses(url: str, outcome: str) -> None:
    with pytest.raises(Rejected) as info:
        check_url(URL(url), NO_ALLOW)
    assert info.value.outcome == outcome and not info.value.transient


def test_check_url_accepts_public_and_named_hosts() -> None:
    check_url(URL("https://images-na.ssl-images-amazon.com/images/M/x.jpg"), NO_ALLOW)
    check_url(URL("http://93.184.216.34/a.jpg"), NO_ALLOW)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_check_image_accepts_and_measures_each_format(fmt: str) -> None:
    data = poster_bytes(3, fmt, size=(30, 40))
    assert sniff_format(data) == fmt.lower()
    assert check_image(data, max_pixels=10_000) == (fmt.lower(), 30, 40)


@pytest.mark.parametrize(
    ("data", "outcome"),
    [(b"<html>nope</html>", "not_an_image"), (b"GIF89a" + bytes(40), "not_an_image"),
     (b"\xff\xd8\xff" + bytes(100), "not_an_image"),
     (poster_bytes(4, size=(200, 300))[:600], "truncated"),
     (poster_bytes(4, "WEBP", size=(200, 300))[:-40], "truncated"),
     (png_bomb(), "too_many_pixels"), (png_bomb(200, 200), "too_many_pixels")],
    ids=["html", "gif", "jpeg-magic-garbage", "jpeg-cut", "webp-cut", "bomb", "over-cap"],
)
def test_check_image_rejects(data: bytes, outcome: str) -> None:
    with pytest.raises(Rejected) as info:
        check_image(data, max_pixels=30_000)
    assert info.value.outcome == outcome


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 31  # type: ignore[operator]
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(past) == 0.0


def test_backoff_is_jittered_exponential_and_capped() -> None:
    config = FetchConfig(backoff_s=1.0, backoff_max_s=5.0, retry_after_max_s=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)]:
        delays = [config.retry_policy().delay(attempt, None) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling / 2  # jitter spreads over the range
    assert config.retry_policy().delay(1, 3.0) == 3.0
    assert config.retry_policy().delay(1, 3600.0) == 10.0


def test_config_defaults_and_validation() -> None:
    config = FetchConfig()
    assert (config.max_bytes, config.max_redirects, config.allow_hosts) == (10_000_000, 5, [])
    assert all(f.description for f in FetchConfig.model_fields.values())
    with pytest.raises(ValidationError):
        FetchConfig(concurrency=0)
    with pytest.raises(ValidationError):
        FetchConfig(surprise=1)  # type: ignore[call-arg]


def noisy_jpeg(progressive: bool) -> bytes:
    """A poster-sized JPEG of noise: a long entropy-coded stream, as real posters have."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", (182, 268), rng.randbytes(182 * 268 * 3))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=75, progressive=progressive)
    return buf.getvalue()


def full_decode_fails(data: bytes) -> bool:
    """Whether Pillow's full-size RGB decode rejects the bytes (the check before drafting)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.convert("RGB").load()
    except Exception:  # noqa: BLE001  (any failure counts)
        return True
    return False


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_reduced_size_decode_still_rejects_every_truncation(progressive: bool) -> None:
    # check_image drafts JPEGs to 1/8 scale, luma only; libjpeg still reads every scan's
    # entropy-coded data, so a body cut anywhere before the end is still refused.
    data = noisy_jpeg(progressive)
    assert data.endswith(b"\xff\xd9")
    assert check_image(data, MAX_PIXELS) == ("jpeg", 182, 268)
    sos = data.index(b"\xff\xda")  # the first scan's header; its entropy-coded data follows
    scan = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    cuts = [*range(scan, len(data) - 2, 53), *range(len(data) - 40, len(data) - 2)]
    for cut in cuts:
        with pytest.raises(Rejected) as info:
            check_image(data[:cut], MAX_PIXELS)
        assert info.value.outcome == "truncated", (cut, info.value.detail)
        assert full_decode_fails(data[:cut]), cut  # the full decode agrees
