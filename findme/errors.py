"""The errors FindMe raises; each knows its HTTP status, machine code and human sentence."""

from __future__ import annotations

from typing import Any


class FindMeError(Exception):
    """Something went wrong."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        # A class's docstring is its sentence, folded over lines in the source: one line here.
        self.detail = detail or " ".join((self.__doc__ or "").split())
        self.extra = extra
        super().__init__(self.detail)


class ConfigurationError(FindMeError):
    """The settings are not valid."""

    code = "configuration_error"


class BadRequest(FindMeError):
    """The request is not valid."""

    status_code = 400
    code = "bad_request"


class NotSignedIn(FindMeError):
    """Sign in first."""

    status_code = 401
    code = "not_signed_in"


class InvalidCredentials(FindMeError):
    """The email or password is wrong."""

    status_code = 401
    code = "invalid_credentials"


class Forbidden(FindMeError):
    """You are not allowed to do this."""

    status_code = 403
    code = "forbidden"


class CsrfFailed(Forbidden):
    """This form has expired or came from another site. Reload the page and try again."""

    code = "csrf_failed"


class JoiningClosed(Forbidden):
    """This event is not taking new guests. Ask the organiser."""

    code = "joining_closed"


class CodeExpired(Forbidden):
    """This join code has expired. Ask the organiser for a new one."""

    code = "code_expired"


class NotFound(FindMeError):
    """Not found."""

    status_code = 404
    code = "not_found"


class Conflict(FindMeError):
    """This conflicts with the current state."""

    status_code = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """This already exists."""

    code = "already_exists"


class TooLarge(FindMeError):
    """The upload is too large."""

    status_code = 413
    code = "too_large"


class UnsupportedMedia(FindMeError):
    """This file type is not supported. Send a JPEG, PNG, WebP or HEIC photo."""

    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(FindMeError):
    """The request is valid but cannot be done."""

    status_code = 422
    code = "unprocessable"


class NoFace(Unprocessable):
    """No face was found in this photo. Take a selfie facing the camera, in good light."""

    code = "no_face"


class SeveralFaces(Unprocessable):
    """This photo shows several faces. Take a selfie with only your face in it."""

    code = "several_faces"


class RateLimited(FindMeError):
    """Too many requests. Wait a moment and try again."""

    status_code = 429
    code = "rate_limited"


class Busy(FindMeError):
    """The server is too busy to answer right now. Try again in a few seconds."""

    status_code = 503
    code = "busy"


class NotReady(FindMeError):
    """The service is not ready yet."""

    status_code = 503
    code = "not_ready"


class StorageError(FindMeError):
    """The photo storage failed. Try again in a moment."""

    status_code = 503
    code = "storage_error"


class RecognitionError(FindMeError):
    """Face recognition is not available right now. Try again in a moment."""

    status_code = 503
    code = "recognition_error"
