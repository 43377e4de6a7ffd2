"""Photo metadata with Pillow: size, EXIF date taken, camera, orientation and GPS.

Only the header is read (`Image.open` is lazy; pixels are never decoded), so a huge or
truncated image costs a few reads. Pillow is optional (the `media` extra).
"""

from __future__ import annotations

from typing import Any

TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_ORIENTATION = 0x0112
TAG_DATETIME = 0x0132
IFD_EXIF = 0x8769
IFD_GPS = 0x8825
TAG_DATETIME_ORIGINAL = 0x9003
TAG_OFFSET_TIME_ORIGINAL = 0x9011
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 ").strip()
    return value or None


def exif_datetime(value: Any, offset: Any = None) -> str | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (+ optional "+07:00") -> ISO 8601, or None when malformed."""
    text = _text(value)
    if not text or len(text) < 19:
        return None
    date, _, time = text[:19].partition(" ")
    parts = date.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or len(time) != 8:
        return None
    if parts[0] == "0000":
        return None
    iso = f"{parts[0]}-{parts[1]}-{parts[2]}T{time}"
    off = _text(offset)
    if off and len(off) == 6 and off[0] in "+-" and off[3] == ":":
        iso += off
    return iso


def _degrees(dms: Any, ref: Any) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    if value != value or value > 180:
        return None
    if _text(ref) in ("S", "W"):
        value = -value
    return round(value, 7)


def read(path: bytes) -> dict[str, Any]:
    """Fields for an image file; raises on files Pillow cannot read."""
    from PIL import Image

    out: dict[str, Any] = {}
    with Image.open(path) as im:
        out["width"], out["height"] = int(im.size[0]), int(im.size[1])
        exif = im.getexif()
        if not exif:
            return out
        for tag, field in ((TAG_MAKE, "camera_make"), (TAG_MODEL, "camera_model")):
            text = _text(exif.get(tag))
            if text:
                out[field] = text
        orientation = exif.get(TAG_ORIENTATION)
        if isinstance(orientation, int) and 1 <= orientation <= 8:
            out["orientation"] = orientation
        sub = exif.get_ifd(IFD_EXIF)
        taken = exif_datetime(sub.get(TAG_DATETIME_ORIGINAL), sub.get(TAG_OFFSET_TIME_ORIGINAL))
        out_taken = taken or exif_datetime(exif.get(TAG_DATETIME))
        if out_taken:
            out["taken_at"] = out_taken
        gps = exif.get_ifd(IFD_GPS)
        if gps:
            lat = _degrees(gps.get(GPS_LAT), gps.get(GPS_LAT_REF))
            lon = _degrees(gps.get(GPS_LON), gps.get(GPS_LON_REF))
            if lat is not None and lon is not None and abs(lat) <= 90:
                out["gps_lat"], out["gps_lon"] = lat, lon
    return out
