"""`findme doctor`: what this configuration uses, and whether each part answers.

One cheap call per part, without retries and with short timeouts: the database (SELECT 1 and
the schema revision), the recognition engine (the local model files, or Rekognition's
ListCollections), the photo storage (S3's HeadBucket) and the mail server (a connection, with
STARTTLS and sign-in as configured).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import aiosmtplib
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url

from findme.capacity import OpenFiles, open_files
from findme.db import Database
from findme.errors import FindMeError
from findme.migrations import head_revision
from findme.settings import Settings

CHECK_CONFIG = AioConfig(
    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=10
)
SMTP_TIMEOUT_S = 10.0
MODEL_FILES = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
_BAD_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)


@dataclass(frozen=True)
class Check:
    part: str
    ok: bool
    sentence: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.part}: {self.sentence}"


def add_doctor_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser(
        "doctor",
        help="check the database, recognition engine, photo storage and mail server this "
        "configuration uses",
    ).set_defaults(run=_doctor)


def _doctor(settings: Settings, _args: argparse.Namespace) -> int:
    _say(
        f"FindMe doctor: recognition engine {settings.recognizer}, photo storage "
        f"{settings.storage}, database {_where(settings.database_url)}"
    )
    checks = asyncio.run(diagnose(settings))
    for check in checks:
        _say(check.line())
    return 0 if all(check.ok for check in checks) else 1


async def diagnose(settings: Settings) -> list[Check]:
    aws = aioboto3.Session(region_name=settings.aws_region)
    engine_check = {"local": _check_models, "rekognition": _check_rekognition}
    storage_check = {"database": _database_storage, "s3": _check_s3}
    return [
        await _check_database(settings),
        await engine_check[settings.recognizer](aws, settings),
        await storage_check[settings.storage](aws, settings),
        await _check_email(settings),
        _check_open_files(),
    ]


async def _check_database(settings: Settings) -> Check:
    db = Database(settings)
    revision: str | None = None
    try:
        async with db.sessions() as session:
            await session.execute(text("SELECT 1"))
            try:
                revision = await session.scalar(text("SELECT version_num FROM alembic_version"))
            except Exception:  # no alembic_version table: never migrated
                revision = None
    except Exception as error:
        return Check(
            "database",
            False,
            f"{_where(settings.database_url)} does not answer ({_first_line(error)}). Check "
            "FINDME_DATABASE_URL and that the database server is running.",
        )
    finally:
        await db.aclose()
    head = head_revision()
    if revision != head:
        return Check(
            "database",
            False,
            f"answers, but the schema is at revision {revision or 'none'} and this version "
            f"needs {head}: run `findme migrate`.",
        )
    return Check("database", True, f"answers; the schema is at the latest revision ({head}).")


async def _check_models(_aws: aioboto3.Session, settings: Settings) -> Check:
    from findme.engines.local import descriptor_net
    from findme.engines.local.detectors import available_detector
    from findme.engines.local.faces import models_dir

    try:
        folder = models_dir()
        detector = available_detector(settings.detector)
    except FindMeError as error:
        return Check("engine", False, f"local (dlib): {error.detail}")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        return Check(
            "engine",
            False,
            f"local (dlib): {', '.join(missing)} missing from {folder}: reinstall the "
            "face-recognition-models package.",
        )
    try:
        descriptor_net.load(folder / descriptor_net.MODEL_FILE)
    except FindMeError as error:
        return Check("engine", False, f"local (dlib): {error.detail}")
    finds = (
        "the CNN detector (libfacedetection) finds the faces"
        if detector == "cnn"
        else "dlib's HOG detector finds the faces"
        + (
            ""
            if settings.detector == "hog"
            else ": the CNN's package (yuface) cannot be imported here, so turned, masked and "
            "covered faces are missed. Install it (CPython 3.11 on x86-64), or set "
            "FINDME_DETECTOR=hog to say this is intended"
        )
    )
    return Check("engine", True, f"local (dlib): {finds}; the model files are in {folder}.")


async def _check_rekognition(aws: aioboto3.Session, settings: Settings) -> Check:
    async with aws.client("rekognition", config=CHECK_CONFIG) as client:
        where = f"Amazon Rekognition at {client.meta.endpoint_url}"
        try:
            await client.list_collections(MaxResults=1)
        except (ClientError, BotoCoreError) as error:
            return Check(
                "engine",
                False,
                f"{where}: {_aws_advice(error, 'Rekognition', 'AWS_ENDPOINT_URL_REKOGNITION')}",
            )
    return Check("engine", True, f"{where} answers ListCollections with these credentials.")


async def _check_s3(aws: aioboto3.Session, settings: Settings) -> Check:
    async with aws.client("s3", config=CHECK_CONFIG) as client:
        where = f"S3 bucket {settings.s3_bucket} at {client.meta.endpoint_url}"
        try:
            await client.head_bucket(Bucket=settings.s3_bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                advice = "it does not exist. Create it, or fix FINDME_S3_BUCKET."
            elif code in ("403", "AccessDenied", "Forbidden"):
                advice = (
                    "these credentials may not use it (403). Allow s3:ListBucket, s3:GetObject, "
                    "s3:PutObject and s3:DeleteObject on it."
                )
            elif code in ("301", "PermanentRedirect"):
                advice = "it is in another region: set FINDME_AWS_REGION to the bucket's region."
            else:
                advice = _aws_advice(error, "S3", "AWS_ENDPOINT_URL_S3")
            return Check("storage", False, f"{where}: {advice}")
        except BotoCoreError as error:
            return Check(
                "storage", False, f"{where}: {_aws_advice(error, 'S3', 'AWS_ENDPOINT_URL_S3')}"
            )
    return Check("storage", True, f"{where} answers HeadBucket with these credentials.")


async def _database_storage(_aws: aioboto3.Session, _settings: Settings) -> Check:
    return Check("storage", True, "photo bytes are kept in the database (checked above).")


async def _check_email(settings: Settings) -> Check:
    if not settings.smtp_host:
        # Not a failure: FindMe works without email, but sign-up then cannot be oracle-free.
        return Check(
            "email",
            True,
            "not configured (FINDME_SMTP_HOST is empty): sign-up confirms no email address and "
            "tells anyone which emails have an account, and no password-reset link can be "
            "sent. Set FINDME_SMTP_HOST to confirm sign-ups by an emailed link.",
        )
    where = f"mail server {settings.smtp_host}:{settings.smtp_port}"
    client = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_user or None,
        password=str(settings.smtp_password) or None,
        start_tls=settings.smtp_starttls,
        timeout=SMTP_TIMEOUT_S,
    )
    try:
        async with client:
            await client.noop()
    except (aiosmtplib.SMTPException, OSError) as error:
        return Check(
            "email",
            False,
            f"{where} does not answer as configured ({_first_line(error)}). Check "
            "FINDME_SMTP_HOST, FINDME_SMTP_PORT, FINDME_SMTP_STARTTLS and the mail server's user "
            "and password.",
        )
    return Check(
        "email",
        True,
        f"{where} answers; sign-up and password reset go by emailed links, so neither tells "
        "which emails have an account.",
    )


def _check_open_files() -> Check:
    """What `findme serve` will have: it raises the soft limit to the hard one as it starts."""
    limit = open_files()
    ready = OpenFiles(soft=limit.hard, hard=limit.hard)
    advice = ""
    if ready.stream_capacity < 1000:
        advice = (
            " For events with many attendees, raise the hard limit (ulimit -Hn, LimitNOFILE= in "
            "a systemd unit, --ulimit nofile= for a container)."
        )
    # Not a failure: a small event runs fine; a large one needs the advice.
    return Check("capacity", True, ready.sentence() + advice)


def _aws_advice(error: Exception, service: str, endpoint_variable: str) -> str:
    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials were found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE), or run with an instance or task role."
        )
    if isinstance(error, EndpointConnectionError):
        return (
            f"cannot be reached ({_first_line(error)}). Check the network, FINDME_AWS_REGION "
            f"and {endpoint_variable}."
        )
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in _BAD_CREDENTIALS:
            return f"AWS rejected the credentials ({code}). Check the access key and secret."
        if code in ("AccessDenied", "AccessDeniedException"):
            return (
                f"these credentials may not use {service} ({code}). Grant the permissions "
                "listed in the README."
            )
        return f"{service} refused the call ({code}: {_first_line(error)})."
    return f"the call failed ({_first_line(error)}). Check the network and {endpoint_variable}."


def _where(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def _first_line(error: Any) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
