"""MiniShop's text backend: catalog, BM25, pages, actions, state machine, env, agents."""

from __future__ import annotations

import math
import re
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archer_agents.environments.base import TEXT_CHARSET
from archer_agents.environments.minishop.actions import parse_action
from archer_agents.environments.minishop.env import MiniShopEnv
from archer_agents.tools.shop.actions import ActionError, Command, plan
from archer_agents.tools.shop.catalog import (
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    Goal,
    Product,
    score_purchase,
)
from archer_agents.tools.shop.chromium import find_chromium, require_playwright
from archer_agents.tools.shop.generate import CATALOG_CONFIGS, generate_catalog, load_catalog
from archer_agents.tools.shop.pages import (
    form_encode,
    item_page,
    parse_observation,
    render_html,
    render_tree,
    results_page,
)
from archer_agents.tools.shop.search import BM25Index, ProductSearch, tokenize
from archer_agents.tools.shop.server import SESSION_COOKIE, ShopServer
from archer_agents.tools.shop.state import ShopState, TextClient
from archer_agents.tools.shop.tools import make_shop_tools

ORIGIN = "http://127.0.0.1:8000"
_ACTION_SEEDS = [
    'click("b2")',
    'click("l3")',
    'fill("t1", "cotton")',
    "search[shirt]",
    "click[Next >]",
    "click[Buy Now]",
    'select_option("s3", "s")',
    "go_back()",
    "click[",
    'fill("t1", "\\u0000\\n")',
]


@pytest.fixture(scope="module")
def env() -> MiniShopEnv:
    return MiniShopEnv(catalog="small")


def _run_episode(env: MiniShopEnv, agent, split: str, task_id: str):
    obs, info = env.reset(options={"split": split, "task_id": task_id})
    agent.reset(obs, info)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        total += reward
        if terminated or truncated:
            return total, info


# -- catalog -----------------------------------------------------------------------------------


def test_catalog_is_deterministic_and_sized():
    a = generate_catalog(CATALOG_CONFIGS["small"])
    b = generate_catalog(CATALOG_CONFIGS["small"])
    assert a.products == b.products
    assert a.goals == b.goals
    default = load_catalog("default")
    assert len(default.products) == 300
    assert len({p.title for p in default.products}) == 300
    assert len({p.product_type for p in default.products}) >= 10
    assert (len(default.goals["train"]), len(default.goals["test"])) == (500, 100)
    with pytest.raises(ValueError, match="unknown catalog"):
        load_catalog("huge")


@pytest.mark.parametrize("name", ["small", "default"])
def test_every_goal_is_satisfiable_and_splits_are_disjoint(name):
    catalog = load_catalog(name)
    for split in ("train", "test"):
        for goal in catalog.goals[split]:
            matches = catalog.satisfying_products(goal)
            assert goal.target_asin in {p.asin for p in matches}
            target = catalog.by_asin[goal.target_asin]
            assert score_purchase(goal, target, goal.options).reward == 1.0
    train = {g.instruction for g in catalog.goals["train"]}
    test = {g.instruction for g in catalog.goals["test"]}
    assert not train & test
    assert {g.template for g in catalog.goals["train"]} <= set(TRAIN_TEMPLATES)
    assert {g.template for g in catalog.goals["test"]} >= set(HELD_OUT_TEMPLATES)


def test_instruction_mentions_everything_the_goal_asks():
    goal = load_catalog("default").goals["test"][0]
    for word in [*goal.attributes, goal.product_type, *goal.options.values()]:
        assert word in goal.instruction
    assert f"{goal.max_price:.2f} dollars" in goal.instruction


def _product(**overrides) -> Product:
    fields = {
        "asin": "B0TEST0001",
        "product_type": "t-shirt",
        "title": "Test Tee",
        "description": "A t-shirt.",
        "attributes": ("cotton", "machine washable", "slim fit"),
        "options": {"colour": ("navy", "black"), "size": ("m", "l")},
        "price": 19.99,
    }
    fields.update(overrides)
    return Product(**fields)


def _goal(**overrides) -> Goal:
    fields = {
        "goal_id": "g",
        "instruction": "i need a machine washable cotton t-shirt in navy, size l",
        "product_type": "t-shirt",
        "attributes": ("machine washable", "cotton"),
        "options": {"colour": "navy", "size": "l"},
        "max_price": 30.0,
        "template": 0,
        "target_asin": "B0TEST0001",
    }
    fields.update(overrides)
    return Goal(**fields)


def test_reward_is_webshop_formula_with_exact_matching():
    goal = _goal()
    product = _product()
    perfect = score_purchase(goal, product, {"colour": "navy", "size": "l"})
    assert perfect.reward == 1.0 and perfect.success
    # 2 attributes + 1 of 2 options + price ok = 4 of 5
    assert score_purchase(goal, product, {"colour": "navy", "size": "m"}).reward == 4 / 5
    assert score_purchase(goal, product, {"colour": "", "size": ""}).reward == 3 / 5
    one_attr = _product(attributes=("cotton", "organic"), price=35.0)
    # 1 attribute + 2 options + price too high = 3 of 5
    assert score_purchase(goal, one_attr, {"colour": "navy", "size": "l"}).reward == 3 / 5
    # exact matching: "navy blue" is not "navy"; a different type earns nothing at all
    assert score_purchase(goal, product, {"colour": "navy blue", "size": "l"}).reward == 4 / 5
    wrong_type = _product(product_type="hoodie")
    assert score_purchase(goal, wrong_type, {"colour": "navy", "size": "l"}).reward == 0.0


# -- search ---------------------------------------------------------------------------------------


def test_bm25_matches_the_formula_by_hand():
    docs = ["red shirt", "blue shirt cotton", "red red hat"]
    index = BM25Index(docs, k1=1.2, b=0.75)
    avg = (2 + 3 + 3) / 3

    def idf(df: int) -> float:
        return math.log(1 + (3 - df + 0.5) / (df + 0.5))

    def term(tf: int, length: int, df: int) -> float:
        return idf(df) * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * length / avg))

    assert index.score("red", 2) == pytest.approx(term(2, 3, 2))
    assert index.score("red shirt", 0) == pytest.approx(term(1, 2, 2) + term(1, 2, 2))
    ranked = index.search("red shirt")
    assert [i for i, _ in ranked] == [0, 2, 1]
    assert index.search("green") == [] and index.search("") == []
    assert tokenize("T-Shirt, 12 oz!") == ["t", "shirt", "12", "oz"]


def test_search_ranks_the_goal_target_first_page():
    catalog = load_catalog("default")
    search = ProductSearch(catalog.products)
    for goal in catalog.goals["test"]:
        titles = {p.asin for p in catalog.satisfying_products(goal)}
        top = [p.asin for p in search.search(goal.keywords())[:10]]
        assert titles & set(top), goal.instruction


# -- pages -------------------------------------------------------------------------------------------


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.interactive: list[dict[str, str | None]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag in ("a", "button", "select") or (tag == "input" and attributes["type"] != "hidden"):
            self.interactive.append(attributes)


def test_pages_are_plain_html_with_stable_ids_on_every_interactive_element():
    catalog = load_catalog("small")
    products = ProductSearch(catalog.products).search("cotton")
    for page in (results_page("cotton", 1, products), item_page(catalog.products[0])):
        html_text = render_html(page)
        parser = _Ids()
        parser.feed(html_text)
        ids = [a.get("id") for a in parser.interactive]
        assert all(ids) and len(set(ids)) == len(ids)
        assert "script" not in parser.tags and "img" not in parser.tags
        assert "http" not in html_text
        assert render_html(results_page("cotton", 1, products)) == render_html(
            results_page("cotton", 1, products)
        )
    tree = render_tree(item_page(catalog.products[0]).elements)
    assert re.search(r"^\[b\d+\] button 'Buy Now'$", tree, re.MULTILINE)
    assert re.search(r"^\[t\d+\] textbox 'Search'$", tree, re.MULTILINE)
    assert re.search(r"^\[s\d+\] combobox 'colour' value='choose'$", tree, re.MULTILINE)


def test_form_encoding_is_the_html_standard_one():
    assert form_encode([("q", "navy t-shirt")]) == "q=navy+t-shirt"
    assert form_encode([("q", "a~b*c'd&e=f/é")]) == "q=a%7Eb*c%27d%26e%3Df%2F%C3%A9"
    assert form_encode([("a", ""), ("b", "1.5_x")]) == "a=&b=1.5_x"


def test_results_paginate_ten_per_page():
    catalog = load_catalog("default")
    products = ProductSearch(catalog.products).search("t-shirt")
    assert len(products) > 20
    first = render_tree(results_page("t-shirt", 1, products).elements)
    second = render_tree(results_page("t-shirt", 2, products).elements)
    assert first.count("] link '") == 11  # ten products and Next
    assert "'< Prev'" in second and "'Next >'" in second
    assert products[10].title in second and products[10].title not in first


# -- actions ---------------------------------------------------------------------------------------


def test_parse_action_forms():
    assert parse_action('click("b12")') == Command("click", element_id="b12")
    assert parse_action("click(bid='b12')") == Command("click", element_id="b12")
    assert parse_action('fill("t3", "navy shirt")') == Command("fill", "t3", "navy shirt")
    assert parse_action('select_option("s7", "L")') == Command("select_option", "s7", "L")
    assert parse_action("go_back()") == Command("go_back")
    assert parse_action("search[ navy cotton t-shirt ]") == Command(
        "search", text="navy cotton t-shirt"
    )
    assert parse_action("click[Buy Now]") == Command("click_text", text="Buy Now")
    json_call = '{"name": "fill", "arguments": {"element_id": "t1", "text": "x"}}'
    assert parse_action(json_call) == Command("fill", "t1", "x")
    for command in (Command("fill", "t1", 'say "hi"'), Command("search", text="a b")):
        assert parse_action(command.to_action()) == command


@pytest.mark.parametrize(
    "action, message",
    [
        ("", "empty action"),
        ("click(", "not a tool call|could not parse"),
        ("buy_everything()", "unknown action"),
        ('click("b1", "b2")', "takes 1 argument"),
        ("fill('t1')", "missing argument"),
        ("click(__import__('os').system('true'))", "not a literal"),
        ("click(['b1'])", "must be a string"),
        ("search[]", "needs a query"),
        ('click(element_id="b1", bid="b1")', "twice"),
    ],
)
def test_malformed_actions_raise_action_error(action, message):
    with pytest.raises(ActionError, match=message):
        parse_action(action)


# -- state machine -------------------------------------------------------------------------------------


def _client(catalog_name: str = "small") -> TextClient:
    catalog = load_catalog(catalog_name)
    client = TextClient(ShopState(catalog), ORIGIN)
    client.open()
    return client


def _do(client: TextClient, action: str):
    return client.perform(plan(parse_action(action), client.view()))


def test_text_client_follows_browser_history_rules():
    client = _client()
    assert not client.view().can_go_back
    view = _do(client, "search[cotton]")
    assert view.url == f"{ORIGIN}/search?q=cotton"
    _do(client, "search[cotton]")  # a form submission always adds an entry
    first_link = next(e for e in client.view().elements if e.role == "link")
    _do(client, f'click("{first_link.element_id}")')
    item_url = client.view().url
    _do(client, 'fill("t1", "typed but not sent")')
    assert client.view().elements[0].value == "typed but not sent"
    view = _do(client, "go_back()")
    assert view.url == f"{ORIGIN}/search?q=cotton"
    assert view.elements[0].value == "cotton"  # reloaded: the server's value, not the typed one
    view = _do(client, "go_back()")
    assert view.url == f"{ORIGIN}/search?q=cotton" and view.can_go_back
    view = _do(client, "go_back()")
    assert view.url == f"{ORIGIN}/" and not view.can_go_back
    assert item_url.startswith(f"{ORIGIN}/item/")


def test_buy_records_the_purchase_with_chosen_options_only():
    client = _client()
    product = client.state.catalog.products[0]
    _do(client, f"search[{product.title}]")
    _do(client, f"click[{product.title}]")
    colour = product.options["colour"][1]
    _do(client, f'select_option("s3", "{colour.upper()}")')
    view = _do(client, "click[Buy Now]")
    assert view.url == f"{ORIGIN}/buy"
    assert client.state.purchase is not None
    assert client.state.purchase.asin == product.asin
    assert client.state.purchase.options["colour"] == colour
    assert all(v == "" for k, v in client.state.purchase.options.items() if k != "colour")
    assert client.state.requests[-1].startswith("POST /buy")


# -- environment ----------------------------------------------------------------------------------------


def test_observation_layout_and_errors(env):
    obs, info = env.reset(seed=3, options={"split": "test"})
    lines = obs.splitlines()
    assert lines[0] == f"Instruction: {env.goal.instruction}"
    assert lines[1] == f"URL: {ORIGIN}/"
    assert "[t1] textbox 'Search'" in lines and "[b2] button 'Search'" in lines
    for action, message in [
        ('click("b99")', "no element with id 'b99'"),
        ('fill("b2", "x")', "'b2' is a button; fill works on textboxes"),
        ('click("t1")', "'t1' is a textbox; click works on links and buttons"),
        ("go_back()", "no previous page"),
        ("click[Checkout]", "nothing clickable named 'Checkout'"),
        ("x" * 2_001, "the limit is 2000"),
        ("search[shirt", "Actions: click"),
    ]:
        after, reward, terminated, truncated, step_info = env.step(action)
        assert step_info["invalid_action"] and message in step_info["error"], action
        assert after.splitlines()[-1] == step_info["error"]
        assert after.splitlines()[:-1] == lines  # the page did not change
        assert (reward, terminated, truncated) == (0.0, False, False)


def test_wrong_option_error_lists_the_options(env):
    expert = env.make_scripted_agent("expert")
    obs = env.reset(options={"split": "test", "task_id": env.task_ids("test")[0]})[0]
    expert.reset(obs, {})
    while "/item/" not in obs.splitlines()[1]:
        obs = env.step(expert.act(obs))[0]
    select = re.search(r"\[(s\d+)\] combobox 'colour'", obs)
    assert select
    obs, _, _, _, info = env.step(f'select_option("{select[1]}", "plaid")')
    assert info["invalid_action"] and "has no option 'plaid'" in info["error"]
    assert "'choose'" in info["error"]


def test_horizon_truncates_with_zero_reward(env):
    env.reset(seed=0)
    for turn in range(1, 16):
        obs, reward, terminated, truncated, info = env.step("go_back()")
        assert reward == 0.0 and not terminated
        assert truncated == (turn == 15)
    assert info["success"] is False
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("go_back()")


@pytest.mark.parametrize("catalog", ["small", "default"])
def test_expert_succeeds_on_every_test_goal(catalog):
    env = MiniShopEnv(catalog=catalog)
    expert = env.make_scripted_agent("expert", seed=0)
    for task_id in env.task_ids("test"):
        reward, info = _run_episode(env, expert, "test", task_id)
        assert reward == 1.0 and info["success"], (task_id, env.goal.instruction)
        assert env.turn <= 8


def test_weak_and_random_agents_do_worse(env):
    ids = env.task_ids("train")
    weak = env.make_scripted_agent("weak", seed=1)
    rand = env.make_scripted_agent("random", seed=1)
    weak_results = [_run_episode(env, weak, "train", t) for t in ids]
    random_results = [_run_episode(env, rand, "train", t) for t in ids]
    weak_success = sum(info["success"] for _, info in weak_results) / len(ids)
    assert 0.0 < weak_success < 1.0
    assert sum(r for r, _ in weak_results) > sum(r for r, _ in random_results)
    assert sum(info["success"] for _, info in random_results) < len(ids) / 4
    with pytest.raises(ValueError, match="unknown scripted agent"):
        env.make_scripted_agent("oracle")


def test_partial_reward_for_a_same_type_product_without_options(env):
    task_id = env.task_ids("test")[0]
    obs, _ = env.reset(options={"split": "test", "task_id": task_id})
    goal = env.goal
    product = env.catalog.by_asin[goal.target_asin]
    obs, *_ = env.step(f"search[{product.title}]")
    obs, *_ = env.step(f"click[{product.title}]")
    obs, reward, terminated, _, info = env.step("click[Buy Now]")
    assert terminated and not info["success"]
    expected = (len(goal.attributes) + 1) / (len(goal.attributes) + len(goal.options) + 1)
    assert reward == pytest.approx(expected)
    assert info["purchase"]["option_hits"] == 0
    assert "heading 'Thank you for your order'" in obs


def test_env_checker_passes_and_observations_are_ascii():
    env = MiniShopEnv(catalog="small")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step('fill("t1", "café ☕ naïve")')
    assert set(obs) <= TEXT_CHARSET
    assert "value='caf? ? na?ve'" in obs
    assert env.observation_space.contains(obs)


def test_registered_ids_make_the_envs():
    env = gym.make("archer/MiniShop-v0", catalog="small")
    obs, _ = env.reset(seed=0)
    assert obs.startswith("Instruction: ")
    assert "archer/MiniShopBrowser-v0" in gym.registry
    entry = gym.registry["archer/MiniShopBrowser-v0"].entry_point
    assert entry == "archer_agents.environments.minishop.browser:MiniShopBrowserEnv"


def test_langchain_tools_drive_the_env(env):
    tools = {tool.name: tool for tool in make_shop_tools(env)}
    assert set(tools) == {"click", "fill", "select_option", "go_back", "search", "click_text"}
    env.reset(options={"split": "test", "task_id": env.task_ids("test")[0]})
    product = env.catalog.by_asin[env.goal.target_asin]
    obs = tools["search"].invoke({"query": product.title})
    assert "URL: http://127.0.0.1:8000/search?q=" in obs
    obs = tools["click_text"].invoke({"text": product.title})
    assert f"heading '{product.title}'" in obs
    page = parse_observation(obs)
    for box in page.find("combobox"):
        obs = tools["select_option"].invoke(
            {"element_id": box.element_id, "option": env.goal.options[box.name]}
        )
    buy = parse_observation(obs).find("button", "Buy Now")[0]
    obs = tools["click"].invoke({"element_id": buy.element_id})
    assert "Thank you for your order" in obs
    assert "episode is over" in tools["go_back"].invoke({})


def test_observation_round_trips_through_the_parser(env):
    obs, _ = env.reset(options={"split": "test", "task_id": env.task_ids("test")[1]})
    obs, *_ = env.step(f"search[{env.goal.keywords()}]")
    page = parse_observation(obs)
    assert page.instruction == env.goal.instruction
    assert page.url.startswith(ORIGIN + "/search?q=")
    assert render_tree(page.elements) in obs


# -- optional browser dependencies fail with the fix ------------------------------------------------------


def test_missing_playwright_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    with pytest.raises(ImportError, match=r"pip install 'archer-agents\[browser\]'"):
        require_playwright()


def test_bad_chromium_path_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("ARCHER_CHROMIUM", "/nonexistent/chrome")
    with pytest.raises(FileNotFoundError, match="ARCHER_CHROMIUM"):
        find_chromium()


# -- robustness and the HTTP server ------------------------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=st.lists(st.text(max_size=60) | st.sampled_from(_ACTION_SEEDS), max_size=6))
def test_no_action_sequence_raises_out_of_step(env, actions):
    obs, _ = env.reset(seed=0)
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert isinstance(info["invalid_action"], bool)
        if terminated or truncated:
            break


def test_server_serves_sessions_only_with_their_cookie():
    catalog = load_catalog("small")
    with ShopServer(catalog) as server:
        assert server.origin.startswith("http://127.0.0.1:") and server.port > 0
        session_id, state = server.new_session()
        request = urllib.request.Request(
            server.origin + "/search?q=cotton", headers={"Cookie": f"{SESSION_COOKIE}={session_id}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            assert response.headers["Cache-Control"] == "no-store"
        assert 'id="t1"' in body and "Results for" in body
        assert state.requests == ["GET /search?q=cotton"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.origin + "/", timeout=10)
        assert refused.value.code == 403
        server.end_session(session_id)
