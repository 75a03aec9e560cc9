"""Typed application state. Every shared object is declared here once and created in a
``cleanup_ctx`` (app.py) so its lifetime is explicit; no module globals.
Plug-ins (admin, cache) replace AUTHENTICATOR / ADMISSION / RESPONSE_CACHE in their setup and
may append to CONFIG_LISTENERS."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.interfaces import Admission, Authenticator, ConfigListener, ResponseCache
from gateway.pipeline import Pipeline
from gateway.runtime import RuntimeHolder
from gateway.tasks import TaskTracker

RUNTIME = web.AppKey("runtime", RuntimeHolder)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
TASKS = web.AppKey("tasks", TaskTracker)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
ADMISSION = web.AppKey("admission", Admission)
RESPONSE_CACHE = web.AppKey("response_cache", ResponseCache)
PIPELINE = web.AppKey("pipeline", Pipeline)
CONFIG_LISTENERS = web.AppKey[list[ConfigListener]]("config_listeners")
