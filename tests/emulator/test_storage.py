"""Storage: fal's CDN token + upload flow, the signed-URL fallback, and serving with Range."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from emulator import storage
from tests.support.emulator import EmulatorProcess

DATA = bytes(range(256)) * 40  # 10240 bytes


def _token(emu: EmulatorProcess) -> dict[str, str]:
    response = httpx.post(
        f"{emu.base_url}/storage/auth/token",
        params={"storage_type": "fal-cdn-v3"},
        headers=emu.auth_headers,
        json={},
    )
    assert response.status_code == 200
    token: dict[str, str] = response.json()
    return token


def test_token_then_upload_then_download(fast_emu: EmulatorProcess) -> None:
    token = _token(fast_emu)
    assert set(token) == {"token", "token_type", "base_url", "expires_at"}
    assert token["base_url"] == fast_emu.base_url
    assert datetime.fromisoformat(token["expires_at"]) > datetime.now(UTC)
    response = httpx.post(
        f"{token['base_url']}/files/upload",
        content=DATA,
        headers={
            "Authorization": f"{token['token_type']} {token['token']}",
            "Content-Type": "video/mp4",
            "X-Fal-File-Name": "my clip.mp4",
        },
    )
    assert response.status_code == 200
    url = response.json()["access_url"]
    assert url.startswith(f"{fast_emu.base_url}/files/") and url.endswith("my_clip.mp4")
    download = httpx.get(url)  # public: no auth
    assert download.status_code == 200
    assert download.content == DATA
    assert download.headers["content-type"] == "video/mp4"
    assert download.headers["content-length"] == str(len(DATA))
    assert download.headers["accept-ranges"] == "bytes"
    head = httpx.head(url)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(DATA)))


def test_upload_needs_a_valid_token(fast_emu: EmulatorProcess) -> None:
    url = f"{fast_emu.base_url}/files/upload"
    assert httpx.post(url, content=DATA).status_code == 401
    bad_token = {"Authorization": "Bearer nope"}
    assert httpx.post(url, content=DATA, headers=bad_token).status_code == 401
    assert httpx.post(url, content=DATA, headers=fast_emu.auth_headers).status_code == 401
    assert httpx.post(f"{fast_emu.base_url}/storage/auth/token", json={}).status_code == 401


def test_range_requests(fast_emu: EmulatorProcess) -> None:
    url = fast_emu.upload(_write(fast_emu), "application/octet-stream")
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == DATA[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
    assert part.headers["content-length"] == "100"
    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert (tail.status_code, tail.content) == (206, DATA[-10:])
    beyond = httpx.get(url, headers={"Range": f"bytes={len(DATA) + 5}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(DATA)}"


def test_initiate_and_put_upload(fast_emu: EmulatorProcess) -> None:
    response = httpx.post(
        f"{fast_emu.base_url}/storage/upload/initiate",
        params={"storage_type": "gcs"},
        headers=fast_emu.auth_headers,
        json={"file_name": "sound.wav", "content_type": "audio/wav"},
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"upload_url", "file_url"}
    assert httpx.get(body["file_url"]).status_code == 404  # nothing until the PUT
    forged = body["upload_url"].split("?")[0] + "?signature=forged"
    assert httpx.put(forged, content=DATA).status_code == 403
    put = httpx.put(body["upload_url"], content=DATA, headers={"Content-Type": "audio/wav"})
    assert put.status_code == 200
    download = httpx.get(body["file_url"])
    assert (download.content, download.headers["content-type"]) == (DATA, "audio/wav")
    assert httpx.put(body["upload_url"], content=DATA).status_code == 403  # single use


def test_generated_outputs_are_served_with_their_types(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    from tests.support.fal_queue import run

    _, result = run(
        fast_client, fast_emu.base_url, "fal-ai/kling-video/video-to-audio", {"video_url": "x"}
    )
    for file in result.json().values():
        response = httpx.get(file["url"])
        assert response.headers["content-type"] == file["content_type"]
        assert int(response.headers["content-length"]) == file["file_size"]


def test_jwks_document(fast_emu: EmulatorProcess) -> None:
    document = httpx.get(f"{fast_emu.base_url}/.well-known/jwks.json").json()
    assert [(k["kty"], k["crv"]) for k in document["keys"]] == [("OKP", "Ed25519")]


def _write(emu: EmulatorProcess):  # type: ignore[no-untyped-def]
    path = emu.data_dir / "range-test.bin"
    path.write_bytes(DATA)
    return path


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("date", "server")}


def test_a_small_file_is_answered_as_the_file_route_answers_it(fast_emu: EmulatorProcess) -> None:
    url = fast_emu.upload(_write(fast_emu), "video/mp4")
    # A Range whose If-Range does not match is answered in full by the route (FileResponse),
    # not by the in-memory fast path: the two answers must not differ.
    by_route = {"Range": "bytes=0-9", "If-Range": '"not-the-etag"'}
    for method in ("GET", "HEAD"):
        fast = httpx.request(method, url)
        routed = httpx.request(method, url, headers=by_route)
        assert fast.status_code == routed.status_code == 200
        assert fast.content == routed.content == (DATA if method == "GET" else b"")
        assert _headers(fast) == _headers(routed)
        assert fast.headers["content-type"] == "video/mp4"


def test_a_file_written_again_is_not_served_from_a_stale_copy(fast_emu: EmulatorProcess) -> None:
    url = fast_emu.upload(_write(fast_emu), "application/octet-stream")
    assert httpx.get(url).content == DATA
    bucket, key = url.rsplit("/", 2)[-2:]
    (fast_emu.data_dir / "files" / bucket / key).write_bytes(b"new content")
    assert httpx.get(url).content == b"new content"


def test_files_kept_in_memory_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "SMALL_FILES_TOTAL", 3 * len(DATA))
    store = storage.FileStore(tmp_path, "http://emulator.test")
    names = []
    for i in range(5):
        stored = store.save_bytes(DATA, f"clip{i}.mp4", "video/mp4")
        names.append(tuple(stored.url.rsplit("/", 2)[-2:]))
        small = store.small_file(*names[-1])
        assert small is not None and small.data == DATA and small.content_type == "video/mp4"
    assert store.in_memory == names[-3:]  # the least recently served went first
    assert store.in_memory_bytes == 3 * len(DATA)
    big = store.save_bytes(b"x" * (storage.SMALL_FILE_MAX + 1), "big.bin", None)
    assert store.small_file(*big.url.rsplit("/", 2)[-2:]) is None  # the route serves it
    assert store.small_file("koala", "missing.mp4") is None
