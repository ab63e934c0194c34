"""The client's exceptions: one for an API's refusal (with its problem+json), one for no answer."""
from __future__ import annotations

import httpx
from pydantic import ValidationError

from service.client.models import Problem


class ClientError(Exception):
    """Base of every error the client raises."""


class ApiError(ClientError):
    """A 4xx/5xx answer. `problem` is its RFC 9457 body; `str()` is one line: status, title, detail.

    An answer that is not problem+json (a proxy's HTML page, another server on that port) gets a
    problem built from the status line, with `code="not_problem_json"`.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        try:
            self.problem = Problem.model_validate(response.json())
        except (ValueError, ValidationError):
            text = " ".join(response.text[:200].split())
            self.problem = Problem(title=response.reason_phrase or "error", status=self.status, detail=text,
                                   code="not_problem_json")
        detail = " ".join(self.problem.detail.split())  # one line
        super().__init__(f"{self.status} {self.problem.title}: {detail}" if detail else f"{self.status} {self.problem.title}")

    @property
    def code(self) -> str | None:
        return self.problem.code


class ApiUnreachable(ClientError):
    """No HTTP answer at all (connection refused, DNS, timeout) after the retries."""

    def __init__(self, url: str, cause: httpx.TransportError) -> None:
        self.url, self.cause = url, cause
        super().__init__(f"cannot reach the API at {url}: {cause or type(cause).__name__}")


class ChecksumMismatch(ClientError):
    """A downloaded file does not hash to the sha256 the API announced."""


class WaitTimeout(ClientError, TimeoutError):
    """`jobs.wait` gave up before the job ended; `job` is the last state seen."""

    def __init__(self, job_id: str, timeout: float, job: object) -> None:
        self.job = job
        super().__init__(f"job {job_id} did not end within {timeout:g} s")
