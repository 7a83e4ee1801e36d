"""The optional API key: when the operator sets one, every /api/v1 route requires it."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The key the operator started the service with")
_bearer = HTTPBearer(auto_error=False, description="The same key, as 'Authorization: Bearer <key>'")


async def require_api_key(
    request: Request,
    header: Annotated[str | None, Security(_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    expected: str | None = request.app.state.service.settings.api_key
    if expected is None:
        return
    given = header or (bearer.credentials if bearer else None)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="this service needs an API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
