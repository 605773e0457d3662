"""Domain errors, each with the HTTP status the API maps it to (only the API knows HTTP)."""

from __future__ import annotations


class DomainError(Exception):
    """Base of errors a caller can act on; `status_code` is the HTTP mapping."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequestError(DomainError):
    """The request cannot be understood as given (a reversed range, a forged cursor)."""

    status_code = 400


class InvalidInputError(DomainError):
    """The request is well-formed but its content is not acceptable."""

    status_code = 422


class NotFoundError(DomainError):
    """The thing does not exist (or the caller may not know that it does)."""

    status_code = 404


class ConflictError(DomainError):
    """The request conflicts with the current state."""

    status_code = 409


class AuthenticationError(DomainError):
    """No valid credentials: missing, malformed, expired, revoked or deactivated."""

    status_code = 401

    def __init__(self, detail: str, *, reason: str, user_id: object | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.user_id = user_id


class PermissionDeniedError(DomainError):
    """Authenticated, but the role does not allow this."""

    status_code = 403

    def __init__(
        self, detail: str, *, reason: str, user_id: object, required_roles: tuple[str, ...] = ()
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.user_id = user_id
        self.required_roles = required_roles
