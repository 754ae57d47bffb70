"""Time-based one-time codes (RFC 6238: 30-second steps, 6 digits, HMAC-SHA1), as authenticator apps read them.

No Django import: the secret, the codes and the enrolment QR code are computed here from explicit times.
"""

import hmac
import xml.etree.ElementTree as ET  # noqa: S405 - builds an SVG from our own data, parses nothing received
from datetime import datetime

import pyotp
import qrcode
import qrcode.image.svg

STEP_SECONDS = 30
DIGITS = 6
# A code of the step before or after the current one is taken too: a phone's clock a little off, or a code typed
# as its step ended.
DRIFT_STEPS = 1

# SVG written without a namespace prefix, as inline SVG in HTML reads it.
ET.register_namespace("", "http://www.w3.org/2000/svg")


def secret_new() -> str:
    """Return a new random secret, base32 (160 bits, the size RFC 4226 recommends)."""
    return pyotp.random_base32(length=32)


def secret_grouped(secret: str) -> str:
    """Return the secret in groups of four characters, for typing into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def time_step(at: datetime) -> int:
    """Return the number of the 30-second step `at` falls in (counted from the Unix epoch)."""
    return int(at.timestamp()) // STEP_SECONDS


def code_at_step(secret: str, step: int) -> str:
    """Return the code of `secret` for one time step."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def code_at(secret: str, at: datetime) -> str:
    """Return the code an authenticator app shows for `secret` at `at`."""
    return code_at_step(secret, time_step(at))


def code_normalized(code: str) -> str:
    """Return the typed code without the spaces and dashes some apps show in it."""
    return "".join(char for char in code if char not in " -\u00a0")


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """Return the time step whose code `code` is, among the current step and its neighbours; None when none."""
    code = code_normalized(code)
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = time_step(at)
    found = None
    # Every candidate is compared, in constant time, so the answer takes as long whichever step matched.
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at_step(secret, step), code) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """Return the otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str, *, label: str) -> str:
    """Return the QR code of `uri` as an inline SVG element, black on white, named `label` for screen readers."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathFillImage, box_size=10, border=4)
    svg = image.get_image()
    svg.set("role", "img")
    svg.set("aria-label", label)
    svg.set("class", "qr")
    # Scaled by the page's style, not millimetres.
    for size in ("width", "height"):
        svg.attrib.pop(size, None)
    return ET.tostring(svg, encoding="unicode")
