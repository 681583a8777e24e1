"""release, release.rollback, release.status through the CLI against one sandbox with beta deployed.

The tests run in order and share one sandbox (one PostgreSQL cluster): the first deploys beta,
the later ones release auth-api's images (pushed to the sandbox registry as CI would) and look.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator

import pytest

from deploykit.azure.target import SANDBOX_SUBSCRIPTION
from deploykit.engine.compare import adopt_running
from tests.conftest import load_example, project_world, run_invoke
from tests.helpers import set_yaml_value

APP = "auth-api"
REPOSITORY = f"trading/{APP}"
SERVER = "acrtradingshared.azurecr.io"
APPS_GROUP = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-apps"
APP_ID = f"{APPS_GROUP}/providers/Microsoft.App/containerApps/{APP}-beta"
VERSION = "2026-07-01"
ADDRESS = f"app.beta.{APP}"


@pytest.fixture(scope="module")
def world() -> Iterator[dict]:
    with project_world("deploykit-release-", "release") as made:
        set_yaml_value(made["project"] / "config" / "beta.yaml", ["health", "timeout_seconds"], 15)
        migrations = made["project"] / "migrations" / "auth"  # sigmatiq_auth, owned by auth-api
        migrations.mkdir(parents=True)
        (migrations / "0001_accounts.sql").write_text("CREATE TABLE accounts (id bigint PRIMARY KEY);\n")
        world = {**made, "migrations": migrations}
        status, _doc, stderr = cli(world, "deploy", "--env", "beta", "--yes")
        assert status == 0, stderr
        yield world


OUTPUTS: list[str] = []  # every stdout and stderr of this module's runs, for the secret canary


def cli(world: dict, *args: str) -> tuple[int, dict, str]:
    result = run_invoke(*args, "--json", env=world["env"])
    OUTPUTS.extend([result.stdout, result.stderr])
    return result.returncode, json.loads(result.stdout), result.stderr


def push(world: dict, tag: str) -> str:
    """Push an image as CI would; its digest."""
    body = {"repository": REPOSITORY, "tag": tag}
    return world["sandbox"].control("PUT", "/registries/acrtradingshared/images", body)["digest"]


def app(world: dict) -> dict:
    return world["sandbox"].provider.read(APP_ID, VERSION)


def image_of(body: dict) -> str:
    return body["properties"]["template"]["containers"][0]["image"]


def serving_image(world: dict) -> str:
    ready = app(world)["properties"]["latestReadyRevisionName"]
    return image_of(world["sandbox"].provider.read(f"{APP_ID}/revisions/{ready}", VERSION))


def app_writes(world: dict, mark: int) -> int:
    entries = world["sandbox"].control("GET", f"/journal?since={mark}")["entries"]
    return sum(1 for e in entries if e["method"] in ("PUT", "PATCH") and e["path"].lower().startswith(APP_ID.lower()))


def readyz(world: dict) -> int:
    fqdn = app(world)["properties"]["configuration"]["ingress"]["fqdn"]
    context = ssl.create_default_context(cafile=world["sandbox"].ca)
    try:
        with urllib.request.urlopen(f"https://{fqdn}/readyz", context=context, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def audit_lines(world: dict) -> list[dict]:
    path = world["root"] / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def release(world: dict, tag: str, *extra: str) -> tuple[int, dict, str]:
    return cli(world, "release", "--env", "beta", "--app", APP, "--tag", tag, "--yes", *extra)


def test_list_items_are_adopted_by_name_and_only_where_declared() -> None:
    declared = {"properties": {"template": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}}
    running = {"properties": {"template": {"containers": [{"name": "b", "image": "y@sha256:2"}, {"name": "a"}]}}}
    adopted = adopt_running("Microsoft.App/containerApps", declared, running)
    assert [c["image"] for c in adopted["properties"]["template"]["containers"]] == ["x:1", "y@sha256:2"]
    assert adopt_running("Microsoft.KeyVault/vaults", declared, running) == declared  # no such rule for vaults


def test_the_image_of_a_real_container_app_answer_is_adopted() -> None:
    """ContainerApps_Get.json (tests/data/arm-examples): its container's image replaces the declared one."""
    answer = load_example("container-app/ContainerApps_Get.json")["responses"]["200"]["body"]
    container = answer["properties"]["template"]["containers"][0]
    declared = {"properties": {"template": {"containers": [{"name": container["name"], "image": "repo/other:v9", "env": []}]}}}
    adopted = adopt_running("Microsoft.App/containerApps", declared, answer)
    assert adopted["properties"]["template"]["containers"] == [
        {"name": container["name"], "image": container["image"], "env": []}
    ]
    assert declared["properties"]["template"]["containers"][0]["image"] == "repo/other:v9"  # the spec is not changed in place


def test_a_release_of_a_good_tag_converges_and_is_verified(world: dict) -> None:
    digest = push(world, "2026.12.1")
    before = serving_image(world)
    (world["migrations"] / "0002_sessions.sql").write_text("CREATE TABLE sessions (id bigint PRIMARY KEY);\n")
    status, doc, stderr = release(world, "2026.12.1")
    assert status == 0, stderr
    assert digest in stderr  # the registry's digest is shown with the plan
    change = next(c for c in doc["changes"] if c["address"] == ADDRESS)
    assert change["result"] == "ok" and change["action"] == "update"
    [migrated] = [c for c in doc["changes"] if c["address"] == "migrations.sigmatiq_auth"]
    assert migrated["diff"]["pending"]["new"] == ["0002_sessions.sql"] and migrated["result"] == "ok"
    lines = [(r["address"], r["result"]) for r in audit_lines(world) if r.get("task") == "release"]
    assert lines.index(("migrations.sigmatiq_auth", "ok")) < lines.index((ADDRESS, "started"))  # migrations first
    after = app(world)["properties"]
    assert after["latestReadyRevisionName"] == after["latestRevisionName"]
    assert serving_image(world) == f"{SERVER}/{REPOSITORY}@{digest}" != before
    assert readyz(world) == 200
    record = [r for r in audit_lines(world) if r["task"] == "release" and r["result"] == "ok"][-1]
    assert (record["digest"], record["tag"], record["previous_image"]) == (digest, "2026.12.1", before)


def test_deploy_keeps_the_released_image_unless_a_tag_is_given(world: dict) -> None:
    released = serving_image(world)
    mark = world["sandbox"].journal_mark()
    status, doc, stderr = cli(world, "deploy", "--env", "beta", "--yes")
    assert status == 0, stderr
    assert next(c for c in doc["changes"] if c["address"] == ADDRESS)["action"] == "unchanged"
    assert app_writes(world, mark) == 0 and serving_image(world) == released
    status, doc, stderr = cli(world, "drift", "--env", "beta")
    assert status == 0, doc["changes"]
    mark = world["sandbox"].journal_mark()
    status, doc, stderr = cli(world, "deploy", "--env", "beta", "--tag", "2026.12.2", "--yes")
    assert status == 0, stderr
    assert app_writes(world, mark) == 1
    assert serving_image(world) == f"{SERVER}/{REPOSITORY}:2026.12.2"


def test_a_failed_explicit_tag_is_not_kept_by_the_next_deploy(world: dict) -> None:
    """What runs is the serving revision's image: a step 5 --tag that never got ready is not kept."""
    box = world["sandbox"]
    serving = serving_image(world)
    box.control("PUT", "/images/failing", {"image": f"{SERVER}/{REPOSITORY}:2026.12.2-broken"})
    status, doc, stderr = cli(world, "step5", "--env", "beta", "--tag", "2026.12.2-broken", "--yes")
    assert status == 1 and image_of(app(world)).endswith(":2026.12.2-broken") and serving_image(world) == serving
    status, doc, stderr = cli(world, "deploy", "--env", "beta", "--yes")
    assert status == 0, stderr
    change = next(c for c in doc["changes"] if c["address"] == ADDRESS)
    assert change["action"] == "update" and list(change["diff"]) == [f"properties.template.containers[{APP}].image"], change
    assert image_of(app(world)) == serving_image(world) == serving


def test_a_failing_tag_exits_1_and_leaves_the_previous_image_serving(world: dict) -> None:
    box = world["sandbox"]
    previous = serving_image(world)
    digest = push(world, "2026.12.3-bad")
    box.control("PUT", "/images/failing", {"image": f"{SERVER}/{REPOSITORY}:2026.12.3-bad"})
    status, doc, stderr = release(world, "2026.12.3-bad")
    assert status == 1
    revisions = box.provider.list_at(f"{APP_ID}/revisions", VERSION)
    failed = [r["name"] for r in revisions if r["properties"]["template"]["containers"][0]["image"].endswith(digest)]
    assert len(failed) == 1 and failed[0] in stderr and "ImagePullFailure" in stderr, stderr
    assert serving_image(world) == previous == image_of(app(world))
    assert readyz(world) == 200
    rollback = [r for r in audit_lines(world) if r.get("action") == "rollback"][-1]
    assert (rollback["failed_revision"], rollback["image"], rollback["result"]) == (failed[0], previous, "ok")
    status, doc, stderr = cli(world, "release.status", "--env", "beta")
    assert status == 0, stderr
    row = next(a for a in doc["apps"] if a["app"] == APP)
    assert row["image"] == previous and row["health"] == "Healthy" and row["traffic"] == {row["serving_revision"]: 100}
    assert failed[0] in row["last_failed"]["error"]


def test_a_rollback_after_a_good_release_returns_to_the_previous_image(world: dict) -> None:
    previous = serving_image(world)
    digest = push(world, "2026.12.4")
    assert release(world, "2026.12.4")[0] == 0
    assert serving_image(world).endswith(digest)
    released = serving_image(world)
    status, doc, stderr = cli(world, "release.rollback", "--env", "beta", "--app", APP, "--yes")
    assert status == 0, stderr
    assert serving_image(world) == previous
    status, doc, stderr = cli(world, "release.rollback", "--env", "beta", "--app", APP, "--dry-run")
    again = next(c for c in doc["changes"] if c["address"] == ADDRESS)["diff"]
    assert status == 0 and [d["new"] for d in again.values()] != [released]  # never back to what was rolled back
    assert readyz(world) == 200
    status, doc, stderr = cli(world, "release.status", "--env", "beta")
    row = next(a for a in doc["apps"] if a["app"] == APP)
    assert row["image"] == previous and row["released"]["task"] == "release.rollback"
    table = run_invoke("release.status", "--env", "beta", env=world["env"])
    OUTPUTS.extend([table.stdout, table.stderr])
    assert table.returncode == 0 and row["serving_revision"] in table.stdout and "release.rollback" in table.stdout


def test_a_failed_migration_stops_before_the_app_is_touched(world: dict) -> None:
    broken = world["migrations"] / "0003_broken.sql"
    broken.write_text("INSERT INTO no_such_table VALUES (1);\n")
    push(world, "2026.12.5")
    before = image_of(app(world))
    mark = world["sandbox"].journal_mark()
    try:
        status, doc, stderr = release(world, "2026.12.5")
    finally:
        broken.unlink()
    assert status == 1
    assert "0003_broken.sql" in stderr and "42P01" in stderr, stderr
    change = next(c for c in doc["changes"] if c["address"] == ADDRESS)
    assert change["result"] == "failed" and "not attempted: migrations.sigmatiq_auth failed" in change["error"]
    assert app_writes(world, mark) == 0 and image_of(app(world)) == before


def test_mistakes_exit_2_and_a_dry_run_writes_nothing(world: dict) -> None:
    mark = world["sandbox"].journal_mark()
    status, doc, stderr = release(world, "never-pushed")
    assert status == 2 and "--tag" in doc["error"] and "never-pushed" in doc["error"]
    status, doc, stderr = cli(world, "release", "--env", "beta", "--app", "nope", "--tag", "x", "--yes")
    assert status == 2 and "--app" in doc["error"] and APP in doc["error"]
    digest = push(world, "2026.12.6")
    status, doc, stderr = release(world, "2026.12.6", "--dry-run")
    assert status == 0 and digest in stderr
    assert next(c for c in doc["changes"] if c["address"] == ADDRESS)["action"] == "update"
    assert world["sandbox"].requests_since(mark)["writes"] == 0


def test_no_secret_reaches_any_output_or_the_audit_log(world: dict) -> None:
    """The canary: every value in the beta vault, searched for in every output and the audit log."""
    box = world["sandbox"]
    group = f"/subscriptions/{SANDBOX_SUBSCRIPTION}/resourceGroups/rg-trading-beta-data"
    vault = f"{group}/providers/Microsoft.KeyVault/vaults/kv-trading-beta"
    client = box.provider.secret_client(box.provider.read(vault, "2026-05-15")["properties"]["vaultUri"])
    values = [client.get_secret(p.name).value for p in client.list_properties_of_secrets()]
    secrets = [v for v in values if v and len(v) >= 8 and not v.startswith("127.0.0.1") and v != "sigmatiqadmin"]
    assert secrets, "the vault holds the admin password, the cache key and the apps' database URLs"
    texts = [*OUTPUTS, (world["root"] / "audit" / "audit.jsonl").read_text()]
    assert len(OUTPUTS) >= 2 * 10  # every run above was captured
    for secret in secrets:
        assert not any(secret in text for text in texts)
