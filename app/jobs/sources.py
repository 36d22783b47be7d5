"""At accept: the job's sources exist and may be fetched (the tenant's own uploads, URLs that are
not obviously internal: the worker vets them fully, with DNS, before fetching), its webhook
too."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.files import service as files_service
from app.files.outbound import check_video_url, outbound_policy
from app.jobs.choice import resolve_model
from app.jobs.store import NewJob
from app.kit.problems import InputValidationError
from app.models import FileKind, StoredFile, Tenant


async def check_input_source(
    session: AsyncSession, tenant: Tenant, job: NewJob, settings: Settings
) -> StoredFile | None:
    """The input's source exists and may be fetched: the tenant's own upload, or a URL that is
    not obviously internal (the worker vets it fully, with DNS, before fetching); the same for
    an audio input (a reference clip)."""
    await _check_audio_uploads(session, tenant, job)
    if job.input_file_id is not None:
        try:
            file = await files_service.get_file(session, tenant.id, job.input_file_id)
            files_service.ensure_present(file)
        except (files_service.FileNotFound, files_service.FileRemoved) as exc:
            raise InputValidationError(
                [{"param": "input.video_file_id", "code": exc.code, "message": exc.detail}]
            ) from exc
        if file.kind is not FileKind.input_upload:
            raise InputValidationError(
                [
                    {
                        "param": "input.video_file_id",
                        "code": "not_an_upload",
                        "message": "use a file uploaded with POST /v1/files",
                    }
                ]
            )
        _check_audio_urls(job, settings)
        _check_webhook(job, settings)
        return file
    check_url(job, settings)
    return None


def names_audio_upload(job: NewJob) -> bool:
    return any(job.input.get(a.file_param) for a in resolve_model(job.model).audio_inputs)


def _check_audio_urls(job: NewJob, settings: Settings) -> None:
    for audio in resolve_model(job.model).audio_inputs:
        url = job.input.get(audio.url_param)
        if url:
            check_video_url(url, outbound_policy(settings), param=f"input.{audio.url_param}")


async def _check_audio_uploads(session: AsyncSession, tenant: Tenant, job: NewJob) -> None:
    """An audio input's upload: the tenant's, present, with an audio stream."""
    spec = resolve_model(job.model)
    try:
        uploads = await files_service.named_audio_uploads(session, tenant.id, spec, job.input)
        for param, file in uploads.items():
            files_service.ensure_present(file)
            if file.kind is not FileKind.input_upload or not (file.media or {}).get("audio"):
                raise InputValidationError(
                    [
                        {
                            "param": f"input.{param}",
                            "code": "not_an_audio_upload",
                            "message": "use an audio file uploaded with POST /v1/files",
                        }
                    ]
                )
    except (files_service.FileNotFound, files_service.FileRemoved) as exc:
        bad = next(a.file_param for a in spec.audio_inputs if job.input.get(a.file_param))
        raise InputValidationError(
            [{"param": f"input.{bad}", "code": exc.code, "message": exc.detail}]
        ) from exc


def check_url(job: NewJob, settings: Settings) -> None:
    _check_audio_urls(job, settings)
    url = job.input.get("video_url")
    if url:
        check_video_url(url, outbound_policy(settings))
    _check_webhook(job, settings)


def _check_webhook(job: NewJob, settings: Settings) -> None:
    url = job.webhook_url
    if url is None:
        return
    if url.startswith("data:"):  # fine for a video, never a receiver
        raise InputValidationError(
            [{"param": "webhook", "code": "url_scheme_not_allowed", "message": "http(s) only"}]
        )
    # As cheap as the video's check (no DNS): the sender vets it fully at each attempt.
    check_video_url(url, outbound_policy(settings), param="webhook")
