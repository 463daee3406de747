"""Tests for vmond.ingest.vendors: per-vendor wording, camera times, test mails."""

from __future__ import annotations

from datetime import datetime

import pytest

from vmond.ingest.vendors import VendorHints, extract_hints, is_test_mail, parse_camera_time


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("2015-05-22,14:52:18", None, datetime(2015, 5, 22, 14, 52, 18)),
        ("at 2023/1/4 09:10:11", None, datetime(2023, 1, 4, 9, 10, 11)),
        ("2020-12-21T02:01:38+08:00", None, datetime(2020, 12, 21, 2, 1, 38)),
        ("2020.12.21 2:01", None, datetime(2020, 12, 21, 2, 1)),
        ("06/05/2018 15:28:40", "DMY", datetime(2018, 5, 6, 15, 28, 40)),
        ("06/05/2018 15:28:40", "MDY", datetime(2018, 6, 5, 15, 28, 40)),
        ("06/05/2018 15:28:40", None, datetime(2018, 5, 6, 15, 28, 40)),  # day first by default
        ("12/25/2018 03:04:05 PM", None, datetime(2018, 12, 25, 15, 4, 5)),  # 25 cannot be a month
        ("2018-02-30 10:00:00", None, None),
        ("1850-01-01 10:00:00", None, None),
        ("no time here", None, None),
    ],
)
def test_parse_camera_time(text: str, order: str | None, expected: datetime | None) -> None:
    assert parse_camera_time(text, order) == expected


def test_hikvision_nvr_camera_name_num() -> None:
    body = (
        "This is an automatically generated e-mail from your NVR.\n\n"
        "EVENT TYPE:    Line Crossing Detection\n"
        "EVENT TIME:    2019-07-14,03:22:10\n"
        "NVR NAME:      Network Video Recorder\n"
        "NVR S/N:       DS-7608NI-K2/8P0820190101CCRR000000000WCVU\n"
        "CAMERA NAME(NUM):   Driveway(D3)\n"
    )
    hints = extract_hints("Network Video Recorder: Line Crossing Detection On Channel D3", body)
    assert hints == VendorHints(
        vendor="hikvision",
        event_type="Line Crossing Detection",
        channel="D3",
        camera_name="Driveway",
        event_time=datetime(2019, 7, 14, 3, 22, 10),
        device_name="Network Video Recorder",
    )


def test_hikvision_dvr_analog_channel() -> None:
    body = (
        "This is an automatically generated e-mail from your DVR.\r\n\r\n"
        "EVENT TYPE:    Motion Detected\r\nEVENT TIME:    2014-01-23,10:52:23\r\n"
        "DVR NAME:      Embedded Net DVR\r\nCAMERA NAME(NUM):   Camera 01(A1)\r\n"
    )
    hints = extract_hints("Embedded Net DVR: Motion Detected", body, {"x-mailer": ""})
    assert (hints.vendor, hints.channel, hints.camera_name) == ("hikvision", "A1", "Camera 01")
    assert hints.event_type == "Motion Detected"


def test_dahua_month_first_label_and_filename_channel() -> None:
    body = (
        "Alarm Event: Motion Detection\r\n"
        "Alarm Start Time(M/D/Y H:M:S): 05/06/2018 15:28:40\r\n"
        "Alarm Device Name: Garage\r\n"
    )
    hints = extract_hints("IPC Message", body, {}, ["20180506152840423ch03.jpg"])
    assert hints.vendor == "dahua"
    assert hints.event_time == datetime(2018, 5, 6, 15, 28, 40)
    assert hints.channel == "3"
    assert hints.camera_name == "Garage"


def test_reolink_old_firmware_body_is_attributed_to_reolink() -> None:
    body = (
        "Alarm Camera Name: Backyard\nAlarm Event: Motion Detection\n"
        "Alarm Input Channel No.: 1\nAlarm Start Time(D/M/Y H:M:S): 24/12/2019 12:00:00\n"
    )
    hints = extract_hints("Alarm", body, {"from": "Reolink <cam@reolink.example>"})
    assert (hints.vendor, hints.camera_name, hints.channel) == ("reolink", "Backyard", "1")
    assert hints.event_time == datetime(2019, 12, 24, 12, 0)


def test_swann_without_bracketed_channel() -> None:
    body = "Device Name: DVR4\nAlarmType: Motion\nTime: 2024-02-07 13:08:59\n"
    hints = extract_hints("Alert from DVR4", body)
    assert (hints.vendor, hints.event_type, hints.channel) == ("swann", "Motion", None)


def test_generic_nvr_from_subject_and_filename() -> None:
    hints = extract_hints(
        "DVR alarm: motion", "Alarm on camera.", {}, ["SNAP_CH07_2020_12_21_02_01_38_41861.jpg"],
    )
    assert (hints.vendor, hints.channel) == ("generic-nvr", "7")


def test_only_a_time_does_not_claim_a_vendor() -> None:
    hints = extract_hints("Something at 2021-01-02 03:04:05", "")
    assert hints.vendor is None and hints.event_type is None
    assert hints.event_time == datetime(2021, 1, 2, 3, 4, 5)


def test_nothing_recognised() -> None:
    assert extract_hints("Hello", "How are you?") == VendorHints()


def test_hostile_body_is_fast() -> None:
    body = ("A" * 59 + ":" + "(" * 30 + "\n") * 5000 + "x: " + "y" * 100_000
    hints = extract_hints("s" * 10_000, body, {}, ["ch1_.jpg"] * 100)
    assert hints.vendor in (None, "generic-nvr")


@pytest.mark.parametrize(
    ("subject", "body", "attachments", "event_type", "expected"),
    [
        ("Test", "", 0, None, True),
        ("测试邮件", "", 1, None, True),
        ("Alarm", "SMTP test", 1, None, True),
        ("Front door", "A test of nothing", 1, None, False),  # a weak "test" with an image
        ("Motion by Test cam", "", 0, "Motion", False),  # a weak "test" in a recognised alarm
        ("Latest alarm", "", 0, None, False),
    ],
)
def test_is_test_mail(subject: str, body: str, attachments: int, event_type: str | None, expected: bool) -> None:
    assert is_test_mail(subject, body, attachments, VendorHints(event_type=event_type)) is expected
