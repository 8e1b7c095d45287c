"""The console end to end: a real server, real SDK agents in their own processes, headless chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.console import KEY_STORAGE, chromium, screenshot, sign_in
from tests.support.agent_procs import AgentProcess
from tests.support.agents import PROJECT_ROOT, AgentFleet
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

# Health checks every second, so an agent's sparkline has points within a test.
SERVER_ENV = {"AGENT_HEALTH_CHECK_INTERVAL": "1s"}
AGENTS = ["agent-1", "agent-2", "agent-3"]
WAIT = 30_000  # ms: the longest a test waits for the console to show something
expect.set_options(timeout=WAIT)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="console-agents")


@pytest.fixture(scope="module")
def fleet(
    server: ServerProcess, agent_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentFleet]:
    agents = AgentFleet(server, agent_key, tmp_path_factory.mktemp("agents"))
    for agent_id in AGENTS:
        agents.start(agent_id, ["text", "vote"])
    agents.wait_active()
    yield agents
    agents.stop()


@pytest.fixture
def page(browser: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = browser.new_page()  # a new tab: its own sessionStorage, so no key carries over between tests
    page.set_default_timeout(WAIT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    screenshot(page, request.node.name)  # every test leaves the page as it ended, passed or failed
    page.close()
    assert errors == [], f"uncaught errors in the console: {errors}"


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create_session(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/api/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def stored_key(page: Page) -> Any:
    return page.evaluate(f"sessionStorage.getItem({KEY_STORAGE!r})")


def test_a_wrong_key_gets_a_clear_message(server: ServerProcess, page: Page) -> None:
    page.goto(f"{server.base_url}/console")  # the bare path redirects to the page
    page.get_by_label("API key").fill("ap_this_key_does_not_exist")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_contain_text("That API key was not accepted")
    expect(page.get_by_role("alert")).to_contain_text("revoked")
    assert stored_key(page) is None  # a refused key is not kept
    expect(page.locator("#nav a")).to_have_count(0)
    screenshot(page, "sign-in-wrong-key")


def test_sign_in_and_see_an_agent_connect(
    server: ServerProcess, agent_key: str, page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sign_in(page, server, server.admin_key)
    assert stored_key(page) == server.admin_key
    expect(page.locator("#nav a")).to_have_text(["Fleet", "Tasks", "Sessions", "Usage"])
    expect(page.locator("#who")).to_contain_text("admin")
    row = page.locator('tr[data-agent-id="newcomer"]')
    expect(page.locator("#agents table")).to_be_visible()
    expect(row).to_have_count(0)
    page.evaluate("window.notReloaded = true")

    agent = AgentProcess(
        server.ws_url, agent_key, "newcomer", model="demo-2", cwd=PROJECT_ROOT,
        log_dir=tmp_path_factory.mktemp("newcomer"), extra_args=["--capability", "text"],
    ).start()  # fmt: skip
    try:
        expect(row.locator(".badge")).to_have_text("active")
        expect(row).to_contain_text("demo-2")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        assert page.evaluate("window.notReloaded") is True  # it came in place, without reloading the page

        row.get_by_role("button", name=re.compile("newcomer")).click()
        detail = page.locator('[data-agent-detail="newcomer"]')
        expect(detail.locator("svg.spark rect").first).to_be_attached()  # health checks, as a sparkline
        expect(page.locator('#capabilities tr[data-capability="text"]')).to_be_visible()
        screenshot(page, "fleet")
    finally:
        agent.kill()


def test_a_task_submitted_through_the_api_appears_and_finishes(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    sign_in(page, server, server.admin_key, "#/tasks")
    expect(page.locator("#tasks table")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    task_id = submit(api, {"type": "sleep", "capabilities": ["text"], "payload": {"ms": 2500}})

    row = page.locator(f'tr[data-task-id="{task_id}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row.locator("td").nth(3)).to_have_text(re.compile(r"agent-\d"))
    assert page.evaluate("window.notReloaded") is True

    row.get_by_role("link").first.click()
    expect(page.locator("#task .badge").first).to_have_text("succeeded")
    timeline = page.locator("#timeline")
    for status in ("assigned", "running", "succeeded"):
        expect(timeline.locator(f'li[data-to="{status}"]')).to_have_count(1)
    expect(page.locator("#assignments tr[data-status=succeeded]")).to_have_count(1)
    expect(page.locator('[data-json="result"] pre')).to_contain_text('"slept_ms": 2500')
    screenshot(page, "task")


def test_cancel_a_running_task(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    task_id = submit(api, {"type": "sleep", "capabilities": ["text"], "payload": {"ms": 60_000}})
    sign_in(page, server, server.admin_key, f"#/tasks/{task_id}")
    expect(page.locator("#task .badge").first).to_have_text("running")

    cancel = page.locator('#task button[data-action="cancel"]')
    cancel.click()
    expect(cancel).to_have_text("Confirm cancel")  # a destructive action asks twice
    cancel.click()
    expect(page.locator("#task .badge").first).to_have_text("cancelled")
    expect(page.locator('#timeline li[data-to="cancelled"]')).to_have_count(1)
    expect(page.locator("#assignments tr").filter(has=page.locator(".badge")).first).to_have_attribute(
        "data-status", "cancelled"
    )
    assert api.get(f"/api/v1/tasks/{task_id}").json()["status"] == "cancelled"
    expect(cancel).to_have_count(0)  # a finished task offers no cancel
    screenshot(page, "task-cancelled")


def test_a_pending_task_says_why_it_waits(server: ServerProcess, api: httpx.Client, page: Page) -> None:
    task_id = submit(api, {"type": "sleep", "capabilities": ["nobody-offers-this"], "queue_timeout": "5m"})
    sign_in(page, server, server.admin_key, f"#/tasks/{task_id}")
    expect(page.locator("#task .badge").first).to_have_text("pending")
    expect(page.locator("#why-waiting")).to_contain_text(
        "No agent has registered capability nobody-offers-this"
    )


def test_watch_a_map_reduce_sessions_chunks_complete(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    lines = [f"alpha beta w{n}" for n in range(16)]
    session_id = create_session(
        api,
        {
            "strategy": "map_reduce",
            "task": {"type": "slow-word-count", "capabilities": ["text"],
                     "payload": {"lines": lines, "delay_ms": 700}},
            "params": {"split_field": "lines", "chunk_size": 2, "max_parallel": 2, "reducer": "sum"},
            "budget": {"max_cost": 1.0},
        },
    )  # fmt: skip
    sign_in(page, server, server.admin_key, f"#/sessions/{session_id}")
    chunks = page.locator(".chunk")
    expect(chunks).to_have_count(8)
    # Seen while it runs: some chunks not done yet, then every one done, on the same page.
    expect(page.locator(".chunk:not([data-status=succeeded])").first).to_be_attached()
    expect(page.locator("#chunk-progress")).to_contain_text("8 / 8 chunks done")
    expect(page.locator("#session .badge").first).to_have_text("succeeded")
    expect(page.locator(".chunk[data-status=succeeded]")).to_have_count(8)
    expect(page.locator("#budget")).to_contain_text("of $1.00 budget")
    expect(page.locator('[data-json="result"] pre')).to_contain_text('"alpha": 16')
    expect(page.locator('#timeline li[data-kind="finished"]')).to_have_count(1)
    screenshot(page, "session-map-reduce")


def test_cancel_a_running_session(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    session_id = create_session(
        api,
        {
            "strategy": "map_reduce",
            "task": {"type": "slow-word-count", "capabilities": ["text"],
                     "payload": {"lines": ["a b", "c d"], "delay_ms": 60_000}},
            "params": {"split_field": "lines", "chunk_size": 1},
        },
    )  # fmt: skip
    sign_in(page, server, server.admin_key, f"#/sessions/{session_id}")
    expect(page.locator("#session .badge").first).to_have_text("running")
    cancel = page.locator('#session button[data-action="cancel"]')
    cancel.click()
    cancel.click()
    expect(page.locator("#session .badge").first).to_have_text("cancelled")
    expect(page.locator(".chunk[data-status=cancelled]")).to_have_count(2)
    assert api.get(f"/api/v1/sessions/{session_id}").json()["status"] == "cancelled"


def test_watch_a_consensus_sessions_answers(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    session_id = create_session(
        api,
        {
            "strategy": "consensus",
            "task": {"type": "vote", "capabilities": ["vote"],
                     "payload": {"default": "42", "answers": {"agent-3": "41"}}},
            "participants": {"agent_ids": AGENTS},
            "params": {"key": "answer", "threshold": 0.6},
        },
    )  # fmt: skip
    sign_in(page, server, server.admin_key, f"#/sessions/{session_id}")
    expect(page.locator("#session .badge").first).to_have_text("succeeded")
    round_one = page.locator('.round[data-round="1"]')
    for agent_id, answer in (("agent-1", '"42"'), ("agent-2", '"42"'), ("agent-3", '"41"')):
        expect(round_one.locator(f'tr[data-participant="{agent_id}"] code')).to_have_text(answer)
    expect(round_one.locator(".agreement")).to_contain_text("2 of 3 agree (67%, threshold 60%)")
    expect(round_one.locator('tr[data-participant="agent-3"] .agree')).to_have_count(0)
    expect(page.locator("#consensus-result")).to_contain_text('"42" (2 of 3, 67%)')
    finished = page.locator('#timeline li[data-kind="subtask_finished"]')
    expect(finished).to_have_count(3)
    expect(finished.filter(has_text="r1-agent-3 succeeded by agent-3")).to_have_count(1)
    screenshot(page, "session-consensus")


def test_watch_a_chain_sessions_steps(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    session_id = create_session(
        api,
        {
            "strategy": "chain",
            "task": {"type": "echo", "capabilities": [], "payload": {"text": "to be or not to be"}},
            "params": {"steps": [
                {"name": "count", "capability": "text", "type": "word-count"},
                {"name": "echo", "capability": "text", "input": {"counts": "$steps.count.output"}},
            ]},
        },
    )  # fmt: skip
    sign_in(page, server, server.admin_key, f"#/sessions/{session_id}")
    expect(page.locator("#session .badge").first).to_have_text("succeeded")
    count, echo = page.locator('tr[data-step="count"]'), page.locator('tr[data-step="echo"]')
    expect(count).to_have_attribute("data-status", "succeeded")
    expect(echo).to_have_attribute("data-status", "succeeded")
    # Inputs and outputs are collapsed JSON: opened with a click, as a user would.
    for row, name, text in (
        (count, "input", '"text": "to be or not to be"'),
        (echo, "input", '"be": 2'),
        (echo, "output", '"counts"'),
    ):
        value = row.locator(f'[data-json="{name}"]')
        expect(value.locator("pre")).not_to_be_visible()
        value.locator("summary").click()
        expect(value.locator("pre")).to_contain_text(text)
    screenshot(page, "session-chain")


def test_a_client_key_sees_no_admin_actions_and_an_admin_can_drain_and_deregister(
    fleet: AgentFleet, server: ServerProcess, agent_key: str, browser: BrowserContext, page: Page,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    agent = AgentProcess(
        server.ws_url, agent_key, "drain-me", cwd=PROJECT_ROOT, log_dir=tmp_path_factory.mktemp("drain-me"),
        extra_args=["--capability", "text"],
    ).start()  # fmt: skip
    try:
        fleet.wait_active(["drain-me"])
        sign_in(page, server, server.create_key("client", name="console-client"))
        expect(page.locator("#who")).to_contain_text("client")
        expect(page.locator("#nav a")).to_have_text(["Fleet", "Tasks", "Sessions", "Usage"])
        expect(page.locator('tr[data-agent-id="drain-me"]')).to_be_visible()
        expect(page.locator('tr[data-agent-id="agent-1"]')).to_be_visible()
        expect(page.locator("button[data-action=drain], button[data-action=deregister]")).to_have_count(0)
        screenshot(page, "fleet-client-key")

        admin = browser.new_page()
        admin.set_default_timeout(WAIT)
        try:
            sign_in(admin, server, server.admin_key)
            row = admin.locator('tr[data-agent-id="drain-me"]')
            drain = row.locator("button[data-action=drain]")
            drain.click()
            drain.click()
            expect(row).to_have_attribute("data-status", "draining")
            assert api_status(server, "drain-me") == "draining"
            deregister = row.locator("button[data-action=deregister]")
            deregister.click()
            deregister.click()
            expect(admin.locator(".flash")).to_contain_text("drain-me was deregistered")
            expect(row).to_have_count(0)
        finally:
            admin.close()
    finally:
        agent.kill()


def api_status(server: ServerProcess, agent_id: str) -> str:
    with server.client() as client:
        return str(client.get(f"/api/v1/agents/{agent_id}").json()["status"])


def test_an_agent_key_sees_only_the_fleet(server: ServerProcess, agent_key: str, page: Page) -> None:
    sign_in(page, server, agent_key)
    expect(page.locator("#nav a")).to_have_text(["Fleet"])
    page.goto(f"{server.base_url}/console/#/tasks")
    expect(page).to_have_url(re.compile(r"#/fleet$"))


def test_usage_charts_over_a_window(
    fleet: AgentFleet, server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    task_id = submit(
        api, {"type": "word-count", "capabilities": ["text"], "payload": {"text": "one two three"}}
    )
    assert api.get(f"/api/v1/tasks/{task_id}", params={"wait": 30}).json()["status"] == "succeeded"
    sign_in(page, server, server.admin_key, "#/usage?window=1h")
    model = page.locator('[data-group="model"]')
    expect(model.locator('tr[data-key="demo-1"]')).to_be_visible()
    expect(model.locator("svg.chart rect.bar").first).to_be_attached()
    expect(page.locator('[data-group="task_type"] tr[data-key="word-count"]')).to_be_visible()
    expect(page.locator("#usage-total")).to_contain_text("last hour")
    screenshot(page, "usage")


def test_a_filtered_task_list_pages_by_cursor(server: ServerProcess, api: httpx.Client, page: Page) -> None:
    tasks = [{"type": "paged", "capabilities": ["nobody-has-it"], "payload": {"n": n}} for n in range(60)]
    assert api.post("/api/v1/tasks:batch", json={"tasks": tasks}).status_code == 201
    sign_in(page, server, server.admin_key, "#/tasks?type=paged&status=pending")
    rows = page.locator("#tasks tr[data-task-id]")
    expect(rows).to_have_count(50)
    expect(page.locator('select[name="status"]')).to_have_value("pending")
    newer, older = page.get_by_role("button", name="← Newer"), page.get_by_role("button", name="Older →")
    expect(newer).to_be_disabled()
    first_page = set(rows.evaluate_all("rows => rows.map(row => row.dataset.taskId)"))
    older.click()
    expect(rows).to_have_count(10)
    expect(older).to_be_disabled()
    second_page = set(rows.evaluate_all("rows => rows.map(row => row.dataset.taskId)"))
    assert not first_page & second_page
    newer.click()
    expect(rows).to_have_count(50)


def test_a_bad_filter_gets_the_servers_field_message(server: ServerProcess, page: Page) -> None:
    sign_in(page, server, server.admin_key, "#/tasks?session_id=not-a-session")
    alert = page.locator("#tasks .error-box")
    expect(alert).to_contain_text("session_id")


def test_a_key_revoked_while_signed_in_signs_the_console_out(
    server: ServerProcess, api: httpx.Client, page: Page
) -> None:
    created = api.post("/api/v1/keys", json={"name": "short-lived", "scopes": ["client"]}).json()
    sign_in(page, server, created["secret"], "#/tasks")
    expect(page.locator("#tasks table")).to_be_visible()
    assert api.delete(f"/api/v1/keys/{created['id']}").status_code == 200
    # The server may honour a revoked key from its cache for up to 5 s; the next refresh after is refused.
    expect(page.get_by_role("alert")).to_contain_text("no longer accepts this API key")
    expect(page.get_by_label("API key")).to_be_visible()
    assert stored_key(page) is None
