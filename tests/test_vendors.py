"""Tests for vmond.ingest.vendors: per-vendor wording, camera times, start/stop phases, test mails."""

from __future__ import annotations

from datetime import datetime

import pytest
from mailmaker import dvr_mail

from vmond.ingest.mailparse import parse_mail
from vmond.ingest.vendorrules import split_phase
from vmond.ingest.vendors import VendorHints, extract_hints, is_test_mail, parse_camera_time, subject_event_type


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


def test_generic_dvr_camera_name_num_is_split_and_keeps_the_subjects_channel() -> None:
    body = "This is a NVR alarm mail: channel:2 detected motion alarm\nCAMERA NAME(NUM): CAM 2 Garage(A2)\n"
    hints = extract_hints("NVR alarm:FN3108XE channel:2 detected motion alarm at 2020-12-21 02:01:38", body)
    assert (hints.vendor, hints.camera_name, hints.channel) == ("generic-nvr", "CAM 2 Garage", "2")
    # Without a channel elsewhere, the recorder's own channel id is the channel.
    hints = extract_hints("Alarm", "Alarm: motion\nCAMERA NAME(NUM): Hall(D7)\n")
    assert (hints.camera_name, hints.channel) == ("Hall", "D7")


def test_dvr_mail_with_the_camera_name_in_a_base64_part() -> None:
    parsed = parse_mail(dvr_mail("CAM 2 Garage", "A2", 2))
    assert (parsed.camera_name, parsed.channel, parsed.event_type) == ("CAM 2 Garage", "2", "motion alarm")


@pytest.mark.parametrize(("written", "kept"), [
    ("Front\x1b[31m Yard\x07", "Front [31m Yard"),  # terminal escapes and bells
    ("Gate\u202egpj.exe", "Gate gpj.exe"),  # a bidi override would show the rest reversed
    ("\u2067Porch\u2069 \u200fשער", "Porch \u200fשער"),  # isolates go; the right-to-left mark stays
    ("Hall" + "x" * 500, "Hall" + "x" * 60),
    ("\x00\x01 ", None),
])
def test_camera_names_are_one_short_line_of_plain_text(written: str, kept: str | None) -> None:
    hints = extract_hints("Alarm", f"Channel Name [IP-CH1]: {written}\nAlarmType: Motion\n")
    assert hints.camera_name == kept


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


# --- start / stop phase -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Motion Detection Start", ("Motion Detection", "start")),
        ("Motion Detection Stop", ("Motion Detection", "stop")),
        ("Video Loss Begin", ("Video Loss", "start")),
        ("Video Loss End", ("Video Loss", "stop")),
        ("Recording Started", ("Recording", "start")),
        ("Recording Stopped", ("Recording", "stop")),
        ("Alarm Input Ended", ("Alarm Input", "stop")),
        ("MOTION DETECTION STOP", ("MOTION DETECTION", "stop")),
        ("Motion Detection (Start)", ("Motion Detection", "start")),
        ("Motion Detection - Stop.", ("Motion Detection", "stop")),
        ("Motion Detection: End", ("Motion Detection", "stop")),
        ("MotionDetect_Start", ("MotionDetect", "start")),
        ("IPC: Motion Detection Start", ("IPC: Motion Detection", "start")),
        # Not phases: no phase word, one glued to the word before, a leading one, nothing before it.
        ("Motion Detection", ("Motion Detection", None)),
        ("Intrusion Detection", ("Intrusion Detection", None)),
        ("Line Crossing", ("Line Crossing", None)),
        ("Person Detected", ("Person Detected", None)),
        ("Start of motion", ("Start of motion", None)),
        ("End of line crossing", ("End of line crossing", None)),
        ("Camera Restart", ("Camera Restart", None)),
        ("Backend", ("Backend", None)),
        ("Weekend", ("Weekend", None)),
        ("Start", ("Start", None)),
        ("- Stop", ("- Stop", None)),
        ("", ("", None)),
    ],
)
def test_split_phase(text: str, expected: tuple[str, str | None]) -> None:
    assert split_phase(text) == expected


def test_dahua_start_and_stop_mails_share_the_event_type() -> None:
    def body(word: str) -> str:
        return (
            f"Alarm Event: Motion Detection {word}\r\nAlarm Input Channel: 1\r\n"
            "Alarm Start Time(D/M/Y H:M:S): 06/05/2018 15:28:40\r\nAlarm Device Name: EZIP\r\n"
        )

    start, stop = extract_hints("IPC Message", body("Start")), extract_hints("IPC Message", body("Stop"))
    assert (start.vendor, start.event_type, start.phase) == ("dahua", "Motion Detection", "start")
    assert (stop.vendor, stop.event_type, stop.phase) == ("dahua", "Motion Detection", "stop")
    assert start.channel == stop.channel == "1"


def test_hikvision_event_type_with_phase() -> None:
    body = "EVENT TYPE: Motion Detection Stopped\nEVENT TIME: 2021-01-02,03:04:05\nCHANNEL NAME: Gate\n"
    hints = extract_hints("DS-2CD: Motion Detection Stopped", body)
    assert (hints.vendor, hints.event_type, hints.phase) == ("hikvision", "Motion Detection", "stop")


@pytest.mark.parametrize(
    ("field", "phase"),
    [
        ("Alarm Action: Start", "start"),
        ("Event State: Stop", "stop"),
        ("Action: Stop", "stop"),
        ("alarm state : END", "stop"),
        ("Action: Record", None),  # a field of that name, but not a phase word
        ("Event State: Stop recording", None),  # a sentence, not a state
        ("Status: Online", None),
    ],
)
def test_phase_from_a_body_field(field: str, phase: str | None) -> None:
    body = f"Alarm Event: Motion Detection\n{field}\nAlarm Input Channel: 2\n"
    hints = extract_hints("IPC Message", body)
    assert (hints.event_type, hints.phase) == ("Motion Detection", phase)


def test_body_field_wins_over_a_phase_word() -> None:
    hints = extract_hints("Motion Detection Start", "Alarm Event: Motion Detection Start\nAction: Stop\n")
    assert (hints.event_type, hints.phase) == ("Motion Detection", "stop")


def test_subject_phase_when_no_recogniser_types_the_event() -> None:
    hints = extract_hints("Motion Detection Stop", "")
    assert (hints.vendor, hints.event_type, hints.phase) == (None, None, "stop")
    assert subject_event_type("Motion Detection Stop", hints) == "Motion Detection"
    assert subject_event_type("Start of motion", extract_hints("Start of motion", "")) == "Start of motion"


def test_camera_named_like_a_phase_is_not_a_phase() -> None:
    # A Reolink camera called "Back End": the subject ends with its name, not a phase.
    hints = extract_hints("Motion Alert from Back End", "", {"from": "Reolink <cam@reolink.example>"})
    assert (hints.camera_name, hints.event_type, hints.phase) == ("Back End", "Motion Alert", None)
    assert subject_event_type("Motion Alert from Back End", hints) == "Motion Alert from Back End"


def test_start_and_stop_mails_share_the_event_type_through_parse_mail() -> None:
    def mail(word: str) -> bytes:
        return (f"Subject: Motion Detection {word}\r\nFrom: ezip@cam.lan\r\n\r\n"
                f"Alarm Event: Motion Detection {word}\r\nAlarm Input Channel: 1\r\n").encode()

    start, stop = parse_mail(mail("Start")), parse_mail(mail("Stop"))
    assert (start.event_type, start.phase) == ("Motion Detection", "start")
    assert (stop.event_type, stop.phase) == ("Motion Detection", "stop")
    assert start.subject == "Motion Detection Start"  # the subject itself is untouched
    assert start.vendor == stop.vendor == "dahua"


@pytest.mark.parametrize(
    ("subject", "event_type", "phase"),
    [
        ("Motion Detection Start", "Motion Detection", "start"),
        ("Motion Detection Ended", "Motion Detection", "stop"),
        ("Motion Detection", "Motion Detection", None),
        ("Start of motion", "Start of motion", None),  # a leading phase word is prose
        ("Stop", "Stop", None),
    ],
)
def test_parse_mail_takes_the_phase_off_a_subject_event_type(subject: str, event_type: str, phase: str | None) -> None:
    parsed = parse_mail(f"Subject: {subject}\r\nFrom: cam@cam.lan\r\n\r\nsee picture".encode())
    assert (parsed.vendor, parsed.event_type, parsed.phase) == (None, event_type, phase)


def test_ordinary_alarms_have_no_phase() -> None:
    for subject, body in [
        ("Embedded Net DVR: Motion Detected", "EVENT TYPE: Motion Detected\nEVENT TIME: 2014-01-23,10:52:23\n"),
        ("IPC Message", "Alarm Event: Intrusion Detection\nAlarm Input Channel: 1\n"),
        ("Person Detected by Front Door at 2023/1/4 09:10:11", 'A person was detected by camera "Front Door"!'),
        ("Line Crossing", ""),
    ]:
        assert extract_hints(subject, body).phase is None, subject


# --- test mails -------------------------------------------------------------------------------------


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
