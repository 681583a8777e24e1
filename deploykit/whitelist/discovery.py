"""The caller's public IPv4 address, from "what is my IP" services: two must agree, quickly.

Asked in parallel with a short timeout; an offline machine, a proxy that answers differently per
service, or any disagreement ends in exit 2 asking for --ip: a wrong address would open the door
to someone else.
"""

from __future__ import annotations

import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor, as_completed

from deploykit.errors import UserError

URLS_ENV = "DEPLOYKIT_DISCOVERY_URLS"  # comma-separated; overrides config (tests, proxies)


def discovery_urls(configured: list[str], sandbox_url: str | None) -> list[str]:
    """The override, else the sandbox's own endpoints on the sandbox (no internet), else config's."""
    override = os.environ.get(URLS_ENV)
    if override:
        return [u.strip() for u in override.split(",") if u.strip()]
    if sandbox_url:
        return [f"{sandbox_url}/_sandbox/ip/1", f"{sandbox_url}/_sandbox/ip/2"]
    return list(configured)


def _ask(url: str, timeout: float, verify: str | bool) -> str:
    import requests

    answer = requests.get(url, timeout=timeout, verify=verify, headers={"Accept": "text/plain"})
    answer.raise_for_status()
    text = answer.text.strip()
    ipaddress.IPv4Address(text)  # ValueError: not an address
    return text


def discover(urls: list[str], timeout: float, verify: str | bool = True) -> str:
    """The one address at least two services report; UserError naming what went wrong otherwise."""
    import requests

    answers: dict[str, str] = {}
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        futures = {pool.submit(_ask, url, timeout, verify): url for url in urls}
        for future in as_completed(futures):
            url = futures[future]
            try:
                answers[url] = future.result()
            except (requests.RequestException, ValueError) as exc:
                failures.append(f"{url}: {type(exc).__name__}")
    distinct = sorted(set(answers.values()))
    hint = "pass --ip with your public address (from your network admin or a browser)"
    if len(distinct) > 1:
        raise UserError(f"--ip: address discovery disagrees ({', '.join(distinct)}); {hint}")
    if len(answers) < 2:
        why = "; ".join(sorted(failures)) or "fewer than two services configured"
        raise UserError(f"--ip: address discovery needs two agreeing answers, got {len(answers)} ({why}); {hint}")
    return distinct[0]
