"""Container registries' images in the sandbox: repositories, tags and manifests, ACR's data plane and importImage.

Images live in the registry's stored record (its PRIVATE data), so they survive restarts, go with
the registry when it is deleted and are never shown by ARM. The data plane answers what the
`azure-containerregistry` SDK calls (azure-facts-2.md 2.4), with ACR's token flow: an anonymous
request gets 401 and a `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge, the
SDK trades its AAD token for a refresh token (POST /oauth2/exchange) and that for an access token
scoped to the challenge (POST /oauth2/token), then repeats the request. No HTTP here: the front
(server.py) passes the request in and sends back (status, body, headers).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from deploykit.sandbox.armtype import PRIVATE, State, now_iso
from deploykit.sandbox.ids import ArmError, parse_id

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
IMAGES = "images"  # key under the record's PRIVATE data: {repository: {"tags", "manifests", times}}
# Docker distribution's grammar (lower case path components) and tags (1-128 of [\w.-], not first . or -).
REPOSITORY_PATTERN = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
TOKEN_SECONDS = 3 * 3600  # ACR's refresh tokens last 3 h, access tokens 75 min (AAD-OAuth.md); one lifetime here
_SIGNING_KEY = secrets.token_bytes(32)  # tokens are only ever checked by the process that issued them
ALL_RIGHTS = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
Answer = tuple[int, Any, dict[str, str]]


class AcrError(Exception):
    """An ACR data-plane error: answered as {"errors": [{"code", "message", "detail"}]} (AcrErrors)."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail, self.headers = status, code, message, detail, headers or {}

    def answer(self) -> Answer:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return self.status, {"errors": [error]}, self.headers


def login_server(name: str) -> str:
    """What ARM answers as loginServer (providers._registry_computed): the name as created, then .azurecr.io."""
    return f"{name}.azurecr.io"


def new_digest() -> str:
    """A random manifest digest, as a CI build that pushed some image would produce."""
    return "sha256:" + hashlib.sha256(secrets.token_bytes(32)).hexdigest()


# ---- images: changes to one registry's PRIVATE data (inside a store transaction) ----------------
def _images(private: dict[str, Any]) -> dict[str, Any]:
    found = private.setdefault(IMAGES, {})
    return found


def _tag_entry(repos: dict[str, Any], repository: str, tag: str, digest: str, manifest: Mapping[str, Any] | None) -> None:
    """Point repository:tag at digest (creating the repository and manifest as needed)."""
    now = now_iso()
    repo = repos.setdefault(repository, {"createdTime": now, "lastUpdateTime": now, "tags": {}, "manifests": {}})
    repo["lastUpdateTime"] = now
    if digest not in repo["manifests"]:
        fields = dict(manifest or {"imageSize": 0, "architecture": "amd64", "os": "linux"})
        repo["manifests"][digest] = {**fields, "createdTime": now, "lastUpdateTime": now}
    if tag:
        old = repo["tags"].get(tag)
        created = old["createdTime"] if old else now
        repo["tags"][tag] = {"digest": digest, "createdTime": created, "lastUpdateTime": now}


def push(repository: str, tag: str, digest: str | None) -> Callable[[dict[str, Any]], str]:
    """The change a CI push makes (PUT /_sandbox/registries/<name>/images): tag -> digest; returns the digest."""
    if not isinstance(repository, str) or not REPOSITORY_PATTERN.match(repository):
        raise ValueError(f"'repository': {repository!r} is not a repository name (lower case, '/'-separated)")
    if not isinstance(tag, str) or not TAG_PATTERN.match(tag):
        raise ValueError(f"'tag': {tag!r} is not a tag; allowed: 1-128 of letters, digits, '_', '.', '-' (not first)")
    if digest is not None and (not isinstance(digest, str) or not DIGEST_PATTERN.match(digest)):
        raise ValueError(f"'digest': {digest!r} is not a digest; allowed: sha256: and 64 lower-case hex digits")
    chosen = digest or new_digest()

    def change(private: dict[str, Any]) -> str:
        size = 20_000_000 + int(chosen[7:15], 16) % 80_000_000  # a plausible, stable image size
        _tag_entry(_images(private), repository, tag, chosen, {"imageSize": size, "architecture": "amd64", "os": "linux"})
        return chosen

    return change


def listing(record: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """A registry record's repositories, each tag and its digest (GET /_sandbox/registries/<name>/images)."""
    repos = (record["body"].get(PRIVATE) or {}).get(IMAGES) or {}
    return {name: {tag: t["digest"] for tag, t in sorted(repo["tags"].items())} for name, repo in sorted(repos.items())}


# ---- ARM importImage (azure-facts-2.md 2.1-2.3), an action hook of the registries entry ----------
def _invalid(message: str) -> ArmError:
    # The code Azure answers for a malformed import body is UNVERIFIED; ARM's usual one for bad parameters.
    return ArmError(400, "InvalidParameters", message)


def _split_image(text: str) -> tuple[str, str | None, str | None]:
    """'repo', 'repo:tag' or 'repo@sha256:...' -> (repository, tag, digest); 'repo' alone means :latest."""
    if "@" in text:
        repository, digest = text.split("@", 1)
        if not DIGEST_PATTERN.match(digest):
            raise _invalid(f"Invalid digest '{digest}' in source image '{text}'.")
        return repository, None, digest
    repository, _, tag = text.partition(":")
    return repository, tag or "latest", None


def _source_record(state: State, target: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """The registry an import reads from: by resourceId (the same registry allowed), or by a sandbox login server."""
    resource_id, uri = source.get("resourceId"), source.get("registryUri")
    if resource_id:
        try:
            key = parse_id(str(resource_id)).key
        except ArmError:
            raise _invalid(f"Invalid source resourceId '{resource_id}'.") from None
        found = state["resources"].get(key)
        if found is None or found["type"].lower() != REGISTRY_TYPE.lower():
            # UNVERIFIED: the code Azure answers for a source registry that does not exist.
            raise ArmError(404, "ResourceNotFound", f"The source registry '{resource_id}' could not be found.")
        return target if found["id"].lower() == target["id"].lower() else found
    if uri:
        host = str(uri).lower().removeprefix("https://").rstrip("/")
        for record in state["resources"].values():
            name = record["id"].rsplit("/", 1)[-1]
            if record["type"].lower() == REGISTRY_TYPE.lower() and login_server(name).lower() == host:
                return target if record is target else record
        # A public registry (docker.io, mcr.microsoft.com) is not emulated. UNVERIFIED code.
        raise _invalid(f"The source registry '{uri}' is not reachable from the sandbox.")
    raise _invalid("The source must name a resourceId or a registryUri.")


def import_image(state: State, record: dict[str, Any], request: dict[str, Any] | None) -> None:
    """POST .../registries/{name}/importImage: copy a manifest (and tag it) into this registry.

    NoForce (the default) fails before copying when any target tag exists; Force overwrites.
    Importing by digest copies that manifest, so each target tag then has the source's digest.
    """
    body = request or {}
    source = body.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("sourceImage"), str) or not source["sourceImage"]:
        raise _invalid("The 'source.sourceImage' property is required.")
    mode = str(body.get("mode", "NoForce"))
    if mode not in ("NoForce", "Force"):
        raise _invalid(f"Invalid mode '{mode}'; allowed: NoForce, Force.")
    targets, untagged = body.get("targetTags") or [], body.get("untaggedTargetRepositories") or []
    if not isinstance(targets, list) or not isinstance(untagged, list):
        raise _invalid("'targetTags' and 'untaggedTargetRepositories' must be lists.")
    src_record = _source_record(state, record, source)
    repository, tag, digest = _split_image(source["sourceImage"])
    src_repo = ((src_record["body"].get(PRIVATE) or {}).get(IMAGES) or {}).get(repository)  # read only: another record
    if digest is None and src_repo is not None and tag in src_repo["tags"]:
        digest = src_repo["tags"][tag]["digest"]
    if src_repo is None or digest is None or digest not in src_repo["manifests"]:
        # UNVERIFIED: the code and wording Azure uses for a source image that does not exist.
        raise _invalid(f"Source image '{source['sourceImage']}' not found in registry '{src_record['id'].rsplit('/', 1)[-1]}'.")
    manifest = copy.deepcopy(src_repo["manifests"][digest])
    if not targets and not untagged:
        targets = [f"{repository}:{tag}" if tag else repository]
    wanted: list[tuple[str, str]] = []
    for item in targets:
        target_repo, _, target_tag = str(item).partition(":")
        wanted.append((target_repo, target_tag or tag or "latest"))
    for target_repo, target_tag in wanted:
        if not REPOSITORY_PATTERN.match(target_repo) or not TAG_PATTERN.match(target_tag):
            raise _invalid(f"Invalid target tag '{target_repo}:{target_tag}'.")
    repos = _images(record["body"].setdefault(PRIVATE, {}))
    if mode == "NoForce":
        taken = [f"{r}:{t}" for r, t in wanted if t in (repos.get(r) or {}).get("tags", {})]
        if taken:
            # UNVERIFIED (azure-facts-2.md 2.3): code and status; the wording follows what a public
            # deploy script matches ("already exists in target registry").
            raise ArmError(409, "Conflict", f"Tag {', '.join(taken)} already exists in target registry.")
    for target_repo, target_tag in wanted:
        _tag_entry(repos, target_repo, target_tag, digest, manifest)
    for target_repo in untagged:
        _tag_entry(repos, str(target_repo), "", digest, manifest)


# ---- the data plane --------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    # Standard alphabet and no padding: the SDK reads a token's expiry with base64.b64decode
    # (azure.containerregistry._helpers._parse_exp_time), which drops '-' and '_'.
    return base64.b64encode(data).decode().rstrip("=")


def _token(claims: dict[str, Any]) -> str:
    """A JWT-shaped token (header.payload.signature) signed with this process's key."""
    text = json.dumps(claims, separators=(",", ":"))
    text += " " * (-len(text) % 3)  # no base64 padding, which the SDK's decoder mishandles
    header = _b64(b'{"alg":"HS256","typ":"JWT"}   ')
    payload = _b64(text.encode())
    signature = _b64(hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def _claims(token: str, kind: str, service: str) -> dict[str, Any] | None:
    """A token's claims when this process issued it, of this kind, for this registry, unexpired; else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    expected = _b64(hmac.new(_SIGNING_KEY, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return None
    claims = json.loads(base64.b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    if claims.get("kind") != kind or str(claims.get("aud", "")).lower() != service.lower() or claims.get("exp", 0) < time.time():
        return None
    return claims


def _scopes(text: str) -> list[dict[str, Any]]:
    """'repository:trading/app:pull,metadata_read registry:catalog:*' -> access entries (type, name, actions)."""
    access = []
    for scope in text.split():
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind and name:
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
    return access


def _form(raw: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


def _challenge(service: str, scope: str, kind: str, name: str, action: str) -> AcrError:
    """401 as ACR answers an anonymous or under-scoped request (azure.github.io/acr Token-BasicAuth.md)."""
    header = f'Bearer realm="https://{service}/oauth2/token",service="{service}",scope="{scope}"'
    return AcrError(
        401,
        "UNAUTHORIZED",
        "authentication required",
        [{"Type": kind, "Name": name, "Action": action}],
        {"WWW-Authenticate": header},
    )


def _authorize(headers: Mapping[str, str], service: str, kind: str, name: str, action: str) -> None:
    """The request's bearer token must grant this action on this resource; otherwise the challenge."""
    scope = f"{kind}:{name}:{action}"
    auth = headers.get("Authorization") or ""
    claims = _claims(auth[len("Bearer ") :], "access", service) if auth.startswith("Bearer ") else None
    granted = claims is not None and any(
        a["type"] == kind and a["name"] == name and (action in a["actions"] or "*" in a["actions"]) for a in claims["access"]
    )
    if not granted:
        raise _challenge(service, scope, kind, name, action)


def _exchange(record: dict[str, Any], service: str, raw: bytes) -> Answer:
    """POST /oauth2/exchange: an AAD access token for an ACR refresh token."""
    form = _form(raw)
    if form.get("grant_type") not in ("access_token", "access_token_refresh_token"):
        raise AcrError(400, "UNSUPPORTED", f"grant_type {form.get('grant_type')!r} is not supported by the sandbox")
    if form.get("service", "").lower() != service.lower():
        # UNVERIFIED: what ACR answers for a service that is not this registry.
        raise AcrError(401, "UNAUTHORIZED", f"service {form.get('service')!r} is not this registry ({service})")
    if not form.get("access_token"):
        raise AcrError(401, "UNAUTHORIZED", "an AAD access token is required")
    token = _token({"kind": "refresh", "aud": service, "exp": int(time.time()) + TOKEN_SECONDS, "iss": "sandbox"})
    return 200, {"refresh_token": token}, {}


def _access_token(record: dict[str, Any], service: str, raw: bytes) -> Answer:
    """POST /oauth2/token: a refresh token (or anonymous access to a public registry) for an access token."""
    form = _form(raw)
    anonymous = form.get("grant_type") == "password" and not form.get("refresh_token")
    if anonymous:
        if not (record["body"].get("properties") or {}).get("anonymousPullEnabled"):
            raise AcrError(401, "UNAUTHORIZED", "anonymous pull is not enabled on this registry")
    elif _claims(form.get("refresh_token", ""), "refresh", service) is None:
        raise AcrError(401, "UNAUTHORIZED", "the refresh token is not valid for this registry")
    access = _scopes(form.get("scope", ""))
    if anonymous:
        access = [dict(a, actions=[x for x in a["actions"] if x in ("pull", "metadata_read")]) for a in access]
    token = _token({"kind": "access", "aud": service, "exp": int(time.time()) + TOKEN_SECONDS, "access": access})
    return 200, {"access_token": token}, {}


def _page(items: list[Any], query: Mapping[str, list[str]], key: Callable[[Any], str]) -> tuple[list[Any], str | None]:
    """`n` and `last` paging as ACR does it; returns the page and the `last` of the next one (or None)."""
    last = (query.get("last") or [None])[0]
    if last is not None:
        items = [i for i in items if key(i) > last]
    n_text = (query.get("n") or [None])[0]
    if n_text is None or not n_text.isdigit() or int(n_text) <= 0 or len(items) <= int(n_text):
        return items, None
    page = items[: int(n_text)]
    return page, key(page[-1])


def _link(path: str, last: str, query: Mapping[str, list[str]]) -> dict[str, str]:
    """The Link header of a further page (Docker registry API, RFC 5988), which the SDK follows."""
    extra = "".join(f"&{k}={quote(v[0], safe='')}" for k, v in query.items() if k in ("n", "orderby", "digest"))
    return {"Link": f'<{path}?last={quote(last, safe="")}{extra}>; rel="next"'}


def _tag_json(tag: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": tag,
        "digest": entry["digest"],
        "createdTime": entry["createdTime"],
        "lastUpdateTime": entry["lastUpdateTime"],
        "signed": False,
        "changeableAttributes": dict(ALL_RIGHTS),
    }


def _manifest_json(digest: str, entry: Mapping[str, Any], tags: list[str]) -> dict[str, Any]:
    return {
        "digest": digest,
        "imageSize": entry.get("imageSize", 0),
        "createdTime": entry["createdTime"],
        "lastUpdateTime": entry["lastUpdateTime"],
        "architecture": entry.get("architecture"),
        "os": entry.get("os"),
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "tags": tags,
        "changeableAttributes": {**ALL_RIGHTS, "quarantineState": "Passed"},
    }


def _repository(repos: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    repo = repos.get(name)
    if repo is None:
        raise AcrError(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
    return repo


def _split_acr_path(parts: list[str]) -> tuple[str, str | None, str | None]:
    """['acr','v1', <name segments>, '_tags'|'_manifests', ref?] -> (repository, collection, reference).

    The SDK sends a repository as one percent-encoded segment (trading%2Fapp); curl sends it as
    several. Both are read.
    """
    rest = parts[2:]
    marker = next((i for i, p in enumerate(rest) if p in ("_tags", "_manifests")), None)
    if marker is None:
        return unquote("/".join(rest)), None, None
    reference = unquote(rest[marker + 1]) if len(rest) > marker + 1 else None
    return unquote("/".join(rest[:marker])), rest[marker], reference


def _acr(
    repos: Mapping[str, Any], service: str, parts: list[str], query: Mapping[str, list[str]], headers: Mapping[str, str]
) -> Answer:
    """GET /acr/v1/...: catalog, repository, tags and manifests (the shapes of the SDK's generated models)."""
    if parts == ["acr", "v1", "_catalog"]:
        _authorize(headers, service, "registry", "catalog", "*")
        page, more = _page(sorted(repos), query, str)
        return 200, {"repositories": page}, _link("/acr/v1/_catalog", more, query) if more else {}
    repository, collection, reference = _split_acr_path(parts)
    _authorize(headers, service, "repository", repository, "metadata_read")
    repo = _repository(repos, repository)
    base = {"registry": service, "imageName": repository}
    tags_of: dict[str, list[str]] = {}
    for tag, entry in sorted(repo["tags"].items()):
        tags_of.setdefault(entry["digest"], []).append(tag)
    if collection is None:
        changeable = {**ALL_RIGHTS, "teleportEnabled": False}
        return (
            200,
            {
                **base,
                "createdTime": repo["createdTime"],
                "lastUpdateTime": repo["lastUpdateTime"],
                "manifestCount": len(repo["manifests"]),
                "tagCount": len(repo["tags"]),
                "changeableAttributes": changeable,
            },
            {},
        )
    if collection == "_tags" and reference is not None:
        entry = repo["tags"].get(reference)
        if entry is None:
            # UNVERIFIED: ACR's code for a missing tag (the Docker registry API has no tag-level code).
            raise AcrError(404, "TAG_UNKNOWN", "the specified tag does not exist", {"name": repository, "tag": reference})
        return 200, {**base, "tag": _tag_json(reference, entry)}, {}
    if collection == "_manifests" and reference is not None:
        entry = repo["manifests"].get(reference)
        if entry is None:
            raise AcrError(404, "MANIFEST_UNKNOWN", "manifest unknown", {"name": repository, "digest": reference})
        return 200, {**base, "manifest": _manifest_json(reference, entry, tags_of.get(reference, []))}, {}
    order = (query.get("orderby") or [""])[0]
    path = f"/acr/v1/{quote(repository, safe='')}/{collection}"
    if collection == "_tags":
        items = [_tag_json(t, e) for t, e in sorted(repo["tags"].items())]
        wanted_digest = (query.get("digest") or [None])[0]
        if wanted_digest:
            items = [i for i in items if i["digest"] == wanted_digest]
        key = (lambda i: i["name"]) if order not in ("timedesc", "timeasc") else (lambda i: i["lastUpdateTime"])
        items.sort(key=key, reverse=order == "timedesc")
        page, more = _page(items, query, lambda i: i["name"]) if not order else (items, None)
        return 200, {**base, "tags": page}, _link(path, more, query) if more else {}
    items = [_manifest_json(d, e, tags_of.get(d, [])) for d, e in sorted(repo["manifests"].items())]
    if order in ("timedesc", "timeasc"):
        items.sort(key=lambda i: i["lastUpdateTime"], reverse=order == "timedesc")
    page, more = _page(items, query, lambda i: i["digest"]) if not order else (items, None)
    return 200, {**base, "manifests": page}, _link(path, more, query) if more else {}


def answer(
    record: dict[str, Any] | None,
    name: str,
    method: str,
    path: str,
    query: Mapping[str, list[str]],
    headers: Mapping[str, str],
    raw: bytes,
) -> Answer:
    """One data-plane request to registry `name` (its stored record, or None when it does not exist)."""
    service = login_server(record["id"].rsplit("/", 1)[-1] if record else name)
    try:
        if record is None:
            # On Azure the host would not resolve; the sandbox answers instead of hanging up.
            raise AcrError(404, "NAME_UNKNOWN", f"registry {name} does not exist (sandbox)")
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["oauth2", "exchange"]:
            return _exchange(record, service, raw)
        if method == "POST" and parts == ["oauth2", "token"]:
            return _access_token(record, service, raw)
        if method in ("GET", "HEAD") and parts[:2] == ["acr", "v1"] and len(parts) > 2:
            repos = (record["body"].get(PRIVATE) or {}).get(IMAGES) or {}
            return _acr(repos, service, parts, query, headers)
        raise AcrError(405, "UNSUPPORTED", f"{method} {path} is not served by the sandbox registry")
    except AcrError as err:
        return err.answer()
