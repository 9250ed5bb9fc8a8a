"""One headless Chromium, with sessions' pages sharded over a few browser contexts.

Why shards (DESIGN.md): a context per page costs two renderer processes per session; one
context for everything is cheap but one renderer crash would end every session. So pages
share a context up to `per_context` sessions, and a context is closed when it empties.
The browser is relaunched lazily after `disconnected`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    async_playwright,
)

from .config import CHROMIUM_ARGS, DRIVER_NODE_OPTIONS

log = logging.getLogger(__name__)


@dataclass
class Shard:
    context: BrowserContext
    pages: set = field(default_factory=set)


class BrowserPool:
    def __init__(self, *, executable_path: str, per_context: int,
                 on_disconnected: Callable[[], None] | None = None,
                 devtools_port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.executable_path = executable_path
        # RECORDER_DEVTOOLS_PORT: Chromium's DevTools on loopback, for tests and debugging.
        self.args = list(CHROMIUM_ARGS) + list(extra_args) + (
            [f"--remote-debugging-port={devtools_port}"] if devtools_port else [])
        self.per_context = per_context
        self.on_disconnected = on_disconnected
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._shards: list[Shard] = []
        self._lock = asyncio.Lock()

    @property
    def up(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def ensure_browser(self) -> Browser:
        async with self._lock:
            if self.up:
                return self._browser
            if self._playwright is None:
                # The driver is started with this process's environment.
                os.environ.setdefault("NODE_OPTIONS", DRIVER_NODE_OPTIONS)
                self._playwright = await async_playwright().start()
            log.info("launching chromium %s", self.executable_path)
            browser = await self._playwright.chromium.launch(
                executable_path=self.executable_path, args=self.args, headless=True)
            browser.on("disconnected", lambda _b: self._lost(browser))
            self._browser, self._shards = browser, []
            return browser

    def _lost(self, browser: Browser) -> None:
        if self._browser is browser:
            log.error("chromium disconnected; it is relaunched for the next session")
            self._browser, self._shards = None, []
            if self.on_disconnected:
                self.on_disconnected()

    async def new_page(self) -> Page:
        """A page in the least-used context that has room, or in a new context."""
        browser = await self.ensure_browser()
        async with self._lock:
            open_shards = [s for s in self._shards if len(s.pages) < self.per_context]
            if open_shards:
                shard = min(open_shards, key=lambda s: len(s.pages))
            else:
                shard = Shard(context=await browser.new_context())
                self._shards.append(shard)
            page = await shard.context.new_page()
            shard.pages.add(page)
            return page

    async def close_page(self, page: Page) -> None:
        """Close `page`, and its context when that was the context's last page."""
        async with self._lock:
            shard = next((s for s in self._shards if page in s.pages), None)
            if shard is not None:
                shard.pages.discard(page)
            try:
                if not page.is_closed():
                    await page.close()
                if shard is not None and not shard.pages:
                    self._shards.remove(shard)
                    await shard.context.close()
            except Exception as exc:  # the browser may already be gone
                log.debug("closing page: %s", exc)

    @property
    def context_count(self) -> int:
        return len(self._shards)

    async def close(self) -> None:
        async with self._lock:
            browser, self._browser, self._shards = self._browser, None, []
            if browser is not None:
                try:
                    await browser.close()
                except Exception as exc:
                    log.debug("closing browser: %s", exc)
            if self._playwright is not None:
                await self._playwright.stop()
                self._playwright = None
