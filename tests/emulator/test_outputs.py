"""Output files: real MP4s and PNGs decoded with PyAV, their shapes per task type, and serving.

Sizes are compared with `media.frame_size` under the fixture's `video_max_height`; the
resolution class itself is checked once at full size. Shots are counted by grouping frames
by mean colour, as tests/emulator/test_media.py does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from klingflow.emulator import EmulatorConfig, EmulatorServer
from klingflow.emulator.media import frame_size
from klingflow.piapi.models import Task

from ..loopback import loopback_client

MAX_HEIGHT = 72  # the `emulator` fixture's video_max_height
FPS = 4  # and its video_fps
IMG = "https://example.com/first-frame.png"


def _body(task_type: str, **input_: Any) -> dict[str, Any]:
    return {"model": "kling", "task_type": task_type, "input": input_}


def _v3(**input_: Any) -> dict[str, Any]:
    return _body("video_generation", **{"prompt": "a lighthouse", "version": "3.0", **input_})


@dataclass(frozen=True)
class Probe:
    duration_seconds: float
    width: int
    height: int
    has_audio: bool


def _complete(emulator: EmulatorServer, client: httpx.Client, body: dict[str, Any]) -> Any:
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    emulator.advance(1000)
    data = client.get(f"/api/v1/task/{task_id}").json()["data"]
    assert data["status"] == "completed"
    return data


def _download(client: httpx.Client, url: str, dest: Path) -> Path:
    response = client.get(url)
    assert response.status_code == 200, response.text
    dest.write_bytes(response.content)
    return dest


def _probe(path: Path) -> Probe:
    with av.open(str(path)) as container:
        assert container.duration is not None
        video = container.streams.video[0]
        return Probe(
            duration_seconds=container.duration / av.time_base,
            width=video.codec_context.width,
            height=video.codec_context.height,
            has_audio=len(container.streams.audio) > 0,
        )


def _segments(path: Path, jump: float = 40.0) -> list[int]:
    """Lengths of runs of frames whose mean colour stays close (a new run on a jump)."""
    with av.open(str(path)) as container:
        means = [
            frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
            for frame in container.decode(video=0)
        ]
    lengths = [1]
    for previous, current in itertools.pairwise(means):
        if float(np.linalg.norm(np.round(current) - np.round(previous))) > jump:
            lengths.append(1)
        else:
            lengths[-1] += 1
    return lengths


def test_v3_output_is_an_mp4_with_the_requested_duration_and_size(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Kling 3.0 answers output.video; the MP4 lasts `duration` s at the 16:9 720p frame size."""
    task = _complete(emulator, client, _v3(duration=4, aspect_ratio="16:9", mode="std"))
    assert set(task["output"]) == {"video"}
    assert Task.model_validate(task).video_url == task["output"]["video"]
    probe = _probe(_download(client, task["output"]["video"], tmp_path / "v.mp4"))
    assert probe.duration_seconds == pytest.approx(4, abs=0.3)
    assert (probe.width, probe.height) == frame_size("16:9", "720p", max_height=MAX_HEIGHT)
    assert not probe.has_audio


def test_enable_audio_adds_an_audio_track(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """With enable_audio the MP4 has an audio stream; pro 9:16 has the 1080p portrait shape."""
    task = _complete(
        emulator, client, _v3(duration=3, aspect_ratio="9:16", mode="pro", enable_audio=True)
    )
    probe = _probe(_download(client, task["output"]["video"], tmp_path / "v.mp4"))
    assert probe.has_audio
    assert probe.duration_seconds == pytest.approx(3, abs=0.3)
    assert (probe.width, probe.height) == frame_size("9:16", "1080p", max_height=MAX_HEIGHT)


@pytest.mark.parametrize(
    ("aspect_ratio", "mode", "size"),
    [("16:9", "std", (1280, 720)), ("9:16", "std", (720, 1280)), ("1:1", "pro", (1080, 1080))],
)
def test_full_size_frames_follow_the_resolution_class(
    emulator: EmulatorServer,
    client: httpx.Client,
    tmp_path: Path,
    aspect_ratio: str,
    mode: str,
    size: tuple[int, int],
) -> None:
    """Without a height cap std renders 720p and pro 1080p, in the requested orientation."""
    emulator.configure(video_max_height=None, video_fps=1)
    task = _complete(emulator, client, _v3(duration=3, aspect_ratio=aspect_ratio, mode=mode))
    probe = _probe(_download(client, task["output"]["video"], tmp_path / "v.mp4"))
    assert (probe.width, probe.height) == size


@pytest.mark.parametrize("task_type", ["video_generation", "omni_video_generation"])
def test_multi_shot_video_has_one_segment_per_shot(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path, task_type: str
) -> None:
    """Each multi-shot shot is a visibly distinct segment lasting its own duration."""
    shots = [
        {"prompt": "a wide shot of the harbour", "duration": 1},
        {"prompt": "a close-up of a gull", "duration": 2},
        {"prompt": "boats at dusk", "duration": 1},
    ]
    body = _body(task_type, version="3.0", prompt="ignored", multi_shots=shots)
    task = _complete(emulator, client, body)
    path = _download(client, task["output"]["video"], tmp_path / "shots.mp4")
    assert _segments(path) == [1 * FPS, 2 * FPS, 1 * FPS]
    assert _probe(path).duration_seconds == pytest.approx(4, abs=0.3)


def test_classic_versions_answer_the_works_shape_with_a_cover(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Versions 1.x-2.x answer `works` with a PNG cover and the video; duration is in ms."""
    body = _body("video_generation", prompt="a fox", version="2.6", duration=5)
    task = _complete(emulator, client, body)
    output = task["output"]
    width, height = frame_size("16:9", "720p", max_height=MAX_HEIGHT)
    assert (output["type"], output["status"]) == ("m2v_txt2video_hq", 99)
    [work] = output["works"]
    assert (work["status"], work["type"]) == (99, "m2v_txt2video_hq")
    assert work["video"]["duration"] == 5000
    assert (work["video"]["width"], work["video"]["height"]) == (width, height)
    assert work["video"]["resource"] != work["video"]["resource_without_watermark"]
    assert work["cover"]["resource"].endswith(".png")
    assert (work["cover"]["width"], work["cover"]["height"], work["cover"]["duration"]) == (
        width,
        height,
        0,
    )
    assert Task.model_validate(task).video_url == work["video"]["resource_without_watermark"]
    probe = _probe(_download(client, work["video"]["resource"], tmp_path / "v.mp4"))
    assert probe.duration_seconds == pytest.approx(5, abs=0.3)
    cover = _download(client, work["cover"]["resource"], tmp_path / "cover.png")
    with Image.open(cover) as image:
        assert image.format == "PNG"
        assert image.size == (width, height)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(_body("video_generation", prompt="a fox", version="2.1"), "video", id="2.1"),
        pytest.param(_body("sound", prompt="rain", duration=5), "audio", id="sound"),
        pytest.param(
            _body("ai_try_on", model_input=IMG, dress_input=IMG, batch_size=1), "image", id="try-on"
        ),
    ],
)
def test_watermarked_and_clean_urls_serve_different_files(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path, body: dict[str, Any], kind: str
) -> None:
    """`resource` (watermarked) and `resource_without_watermark` are two URLs, two files."""
    work = _complete(emulator, client, body)["output"]["works"][0][kind]
    marked, clean = work["resource"], work["resource_without_watermark"]
    assert marked != clean
    marked_bytes = _download(client, marked, tmp_path / "marked").read_bytes()
    clean_bytes = _download(client, clean, tmp_path / "clean").read_bytes()
    assert marked_bytes != clean_bytes
    assert marked_bytes[:12] == clean_bytes[:12]  # the same kind of file (MP4 or PNG header)


def test_image_to_video_works_type_says_img2video(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A classic task with image_url reports the works type m2v_img2video_hq."""
    body = _body("video_generation", image_url=IMG, version="2.1", duration=5)
    assert _complete(emulator, client, body)["output"]["type"] == "m2v_img2video_hq"


def test_works_are_null_until_completion(paused: EmulatorServer, client: httpx.Client) -> None:
    """A classic task shows {"type": "", "status": 0, "works": null} until it completes."""
    body = _body("video_generation", prompt="a fox", version="2.6", duration=5)
    task = client.post("/api/v1/task", json=body).json()["data"]
    assert task["output"] == {"type": "", "status": 0, "works": None}


def test_sound_gives_four_audio_outputs(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """A sound task answers four works, each an `audio` MP4 with an audio track."""
    task = _complete(emulator, client, _body("sound", prompt="rain on a roof", duration=5))
    works = task["output"]["works"]
    assert len(works) == 4
    urls = [work["audio"]["resource_without_watermark"] for work in works]
    assert len(set(urls)) == 4
    assert Task.model_validate(task).output_urls == urls
    probe = _probe(_download(client, urls[3], tmp_path / "s.mp4"))
    assert probe.has_audio
    assert probe.duration_seconds == pytest.approx(5, abs=0.3)


def test_try_on_gives_one_png_per_batch_image(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """ai_try_on answers `batch_size` works with portrait PNG images."""
    body = _body(
        "ai_try_on",
        model_input="https://example.com/me.png",
        dress_input="https://example.com/dress.png",
        batch_size=2,
    )
    works = _complete(emulator, client, body)["output"]["works"]
    assert len(works) == 2
    size = frame_size("9:16", "720p", max_height=MAX_HEIGHT)
    for n, work in enumerate(works):
        path = _download(client, work["image"]["resource"], tmp_path / f"{n}.png")
        with Image.open(path) as image:
            assert image.size == size


@pytest.mark.parametrize(
    ("body", "seconds", "has_audio"),
    [
        pytest.param(_body("effects", image_url=IMG, effect="squish"), 5, False, id="effects"),
        pytest.param(
            _body("motion_control", image_url=IMG, preset_motion="Wave"), 5, False, id="motion"
        ),
        pytest.param(
            _body("motion_control", image_url=IMG, preset_motion="Wave", keep_original_sound=True),
            5,
            True,
            id="motion with sound",
        ),
        pytest.param(_body("avatar", image_url=IMG, tts_text="hello"), 5, True, id="avatar"),
        pytest.param(
            _body("omni_video_generation", prompt="a kite", duration=3, enable_audio=True),
            3,
            True,
            id="omni",
        ),
        pytest.param(
            {
                "model": "kling-turbo",
                "task_type": "video_generation",
                "input": {"prompt": "a kite", "duration": 10},
            },
            10,
            False,
            id="turbo",
        ),
    ],
)
def test_every_video_task_type_renders_a_playable_mp4(
    emulator: EmulatorServer,
    client: httpx.Client,
    tmp_path: Path,
    body: dict[str, Any],
    seconds: int,
    has_audio: bool,
) -> None:
    """Effects, motion control, avatar, omni and turbo outputs decode with the right length."""
    task = _complete(emulator, client, body)
    url = Task.model_validate(task).video_url
    assert url is not None
    probe = _probe(_download(client, url, tmp_path / "out.mp4"))
    assert probe.duration_seconds == pytest.approx(seconds, abs=0.3)
    assert probe.has_audio is has_audio


def test_extend_video_appends_five_seconds_as_a_new_shot(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """An extension lasts the origin's length plus 5 s, the extension a segment of its own."""
    origin = _complete(emulator, client, _body("video_generation", prompt="a", version="2.6"))
    body = _body("extend_video", origin_task_id=origin["task_id"], prompt="and then it rains")
    task = _complete(emulator, client, body)
    path = _download(client, task["output"]["works"][0]["video"]["resource"], tmp_path / "e.mp4")
    assert _probe(path).duration_seconds == pytest.approx(10, abs=0.3)
    assert _segments(path) == [5 * FPS, 5 * FPS]


def test_lip_sync_keeps_the_origin_length_and_adds_speech(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """A lip sync output lasts as long as its origin video and carries an audio track."""
    origin = _complete(
        emulator, client, _body("video_generation", prompt="a", version="2.6", duration=10)
    )
    body = _body("lip_sync", origin_task_id=origin["task_id"], tts_text="good evening")
    task = _complete(emulator, client, body)
    path = _download(client, task["output"]["works"][0]["video"]["resource"], tmp_path / "l.mp4")
    probe = _probe(path)
    assert probe.duration_seconds == pytest.approx(10, abs=0.3)
    assert probe.has_audio


def test_outputs_expire_after_the_retention_period(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """Once retention_seconds have passed since the task ended its files answer 404."""
    paused.configure(retention_seconds=30)
    task_id = client.post("/api/v1/task", json=_v3(duration=3)).json()["data"]["task_id"]
    paused.advance(62)  # ends now
    task = client.get(f"/api/v1/task/{task_id}").json()["data"]
    url = task["output"]["video"]
    paused.advance(29)
    assert client.get(url).status_code == 200
    paused.advance(2)
    gone = client.get(url)
    assert gone.status_code == 404
    assert gone.json()["code"] == 404
    assert "retention" in gone.json()["message"]
    assert client.head(url).status_code == 404
    # The task itself is still there, pointing at the expired file.
    assert client.get(f"/api/v1/task/{task['task_id']}").json()["data"]["output"]["video"] == url


def _fetch(client: httpx.Client, url: str) -> tuple[bytes, str]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.content, response.headers["etag"]


def test_reuse_renders_shares_one_file_per_output_shape(
    emulator: EmulatorServer, client: httpx.Client, tmp_path: Path
) -> None:
    """With reuse_renders, same-shape videos of different prompts serve the same bytes."""
    emulator.configure(reuse_renders=True)
    owl = _complete(emulator, client, _v3(prompt="an owl", duration=3))["output"]["video"]
    fox = _complete(emulator, client, _v3(prompt="a fox", duration=3))["output"]["video"]
    longer = _complete(emulator, client, _v3(prompt="an owl", duration=4))["output"]["video"]
    assert len({owl, fox, longer}) == 3  # every task keeps its own URL
    assert _fetch(client, owl) == _fetch(client, fox)
    assert _fetch(client, longer)[1] != _fetch(client, owl)[1]
    probe = _probe(_download(client, longer, tmp_path / "longer.mp4"))
    assert probe.duration_seconds == pytest.approx(4, abs=0.3)


def test_reuse_renders_keeps_a_render_per_shape_on_disk(tmp_path: Path, api_key: str) -> None:
    """A thousand-task benchmark costs one render per shape: the files folder holds one MP4."""
    config = EmulatorConfig(
        api_keys=[api_key],
        reuse_renders=True,
        pending_seconds=0,
        processing_seconds=0,
        video_max_height=MAX_HEIGHT,
        video_fps=FPS,
    )
    with (
        EmulatorServer(config, files_dir=tmp_path) as server,
        loopback_client(server.url, headers={"x-api-key": api_key}) as http,
    ):
        for n in range(5):
            created = http.post("/api/v1/task", json=_v3(prompt=f"shot {n}")).json()["data"]
            task = http.get(f"/api/v1/task/{created['task_id']}").json()["data"]
            assert http.get(task["output"]["video"]).status_code == 200
        assert len(list(tmp_path.glob("*.mp4"))) == 1


def test_reuse_renders_still_expires_each_task_on_its_own(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """One task's output expiring leaves the shared render to a task still within retention."""
    paused.configure(reuse_renders=True, retention_seconds=100)
    first = client.post("/api/v1/task", json=_v3()).json()["data"]["task_id"]
    paused.advance(62)
    first_url = client.get(f"/api/v1/task/{first}").json()["data"]["output"]["video"]
    body = _fetch(client, first_url)
    second = client.post("/api/v1/task", json=_v3()).json()["data"]["task_id"]
    paused.advance(62)
    second_url = client.get(f"/api/v1/task/{second}").json()["data"]["output"]["video"]
    paused.advance(70)  # the first ended 132 s ago, the second 70 s ago
    assert client.get(first_url).status_code == 404
    assert _fetch(client, second_url) == body


def test_files_of_unfinished_tasks_are_404(paused: EmulatorServer, client: httpx.Client) -> None:
    """No file is served before its task completes, nor for a made-up name."""
    task_id = client.post("/api/v1/task", json=_v3()).json()["data"]["task_id"]
    assert client.get(f"/files/{task_id}.mp4").status_code == 404
    assert client.get("/files/nothing.mp4").status_code == 404


def test_head_gives_the_length_and_type_without_a_body(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """HEAD on a file answers GET's headers: full Content-Length, type, byte ranges; no body."""
    url = _complete(emulator, client, _v3(duration=3))["output"]["video"]
    full = client.get(url)
    head = client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(full.content)
    assert head.headers["content-type"] == "video/mp4"
    assert head.headers["accept-ranges"] == "bytes"
    assert head.headers["etag"] == full.headers["etag"]
    ranged = client.head(url, headers={"range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.headers["content-length"] == "10"


@pytest.fixture
def video(emulator: EmulatorServer, client: httpx.Client) -> tuple[str, bytes]:
    """A completed video's URL and its full bytes."""
    url = _complete(emulator, client, _v3(duration=3))["output"]["video"]
    return url, client.get(url).content


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, None),
        ("bytes=-16", -16, None),
        ("bytes=5-5", 5, 5),
        ("bytes=0-999999999", 0, None),
        ("bytes=-999999999", 0, None),
    ],
)
def test_single_byte_ranges_answer_206_with_content_range(
    client: httpx.Client, video: tuple[str, bytes], header: str, first: int, last: int | None
) -> None:
    """A satisfiable single range gets 206, exactly those bytes, and a Content-Range."""
    url, data = video
    size = len(data)
    start = first % size if first < 0 else first
    end = size - 1 if last is None else last
    response = client.get(url, headers={"range": header})
    assert response.status_code == 206
    assert response.content == data[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"


@pytest.mark.parametrize(
    "header", ["bytes={size}-", "bytes={size}-{more}", "bytes=9-3", "bytes=-0"]
)
def test_unsatisfiable_ranges_answer_416(
    client: httpx.Client, video: tuple[str, bytes], header: str
) -> None:
    """Ranges past the end, reversed, or empty suffixes get 416 with `bytes */size`."""
    url, data = video
    size = len(data)
    response = client.get(url, headers={"range": header.format(size=size, more=size + 9)})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", ["bytes=-", "bytes=0-1,4-5", "items=0-3", "bytes=a-b"])
def test_ranges_we_do_not_serve_are_ignored(
    client: httpx.Client, video: tuple[str, bytes], header: str
) -> None:
    """Multi-range, other units and malformed headers get the whole file with 200."""
    url, data = video
    response = client.get(url, headers={"range": header})
    assert response.status_code == 200
    assert response.content == data
