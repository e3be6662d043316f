"""gateway.catalog and gateway.runtime.Routes: the names clients see, the way back, collisions and resource routing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable

import mcp_types as types
import pytest
from django.utils import timezone

from gateway.catalog import Catalog, exposed_name, scheme_of, template_pattern
from gateway.link import Link, SharedPool, UpstreamConfig
from gateway.models import Transport
from gateway.runtime import Routes

SCHEMA = {"type": "object", "properties": {}}
EVERYTHING_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"


def tool(name: str) -> types.Tool:
    return types.Tool(name=name, description=f"The {name} tool", input_schema=SCHEMA)


def prompt(name: str) -> types.Prompt:
    return types.Prompt(name=name, description=f"The {name} prompt")


def resource(uri: str) -> types.Resource:
    return types.Resource(uri=uri, name=uri.rsplit("/", 1)[-1] or uri)


def template(uri_template: str) -> types.ResourceTemplate:
    return types.ResourceTemplate(uri_template=uri_template, name="template")


def catalog(
    prefix: str,
    *,
    tools: Iterable[str] = (),
    prompts: Iterable[str] = (),
    resources: Iterable[str] = (),
    templates: Iterable[str] = (),
) -> Catalog:
    return Catalog.build(
        prefix=prefix,
        tools=[tool(n) for n in tools],
        prompts=[prompt(n) for n in prompts],
        resources=[resource(u) for u in resources],
        templates=[template(t) for t in templates],
    )


# ---------------------------------------------------------------------------
# exposed_name
# ---------------------------------------------------------------------------
def test_an_upstream_name_is_exposed_under_its_prefix() -> None:
    assert exposed_name("github", "create_issue") == "github__create_issue"


def test_an_empty_prefix_exposes_the_name_as_it_is() -> None:
    assert exposed_name("", "create_issue") == "create_issue"


@pytest.mark.parametrize(
    ("name", "exposed"),
    [
        ("get.file", "gh__get_file"),
        ("read file/v2", "gh__read_file_v2"),
        ("café:ß", "gh__caf___"),
        ("a-b_C9", "gh__a-b_C9"),
    ],
)
def test_characters_outside_letters_digits_dash_and_underscore_become_underscores(name: str, exposed: str) -> None:
    assert exposed_name("gh", name) == exposed


def test_a_name_of_exactly_64_characters_is_kept() -> None:
    name = "n" * 60
    assert exposed_name("gh", name) == f"gh__{name}"


def test_a_longer_name_is_cut_to_64_characters_with_a_hash_of_the_whole() -> None:
    name = "very_long_tool_name_" * 5  # 100 characters: 104 with the prefix
    exposed = exposed_name("gh", name)
    digest = hashlib.sha256(f"gh__{name}".encode()).hexdigest()[:8]
    assert exposed == f"gh__{name}"[:55] + "_" + digest
    assert len(exposed) == 64


def test_a_cut_name_is_stable_and_two_names_alike_at_the_start_stay_apart() -> None:
    first, second = "x" * 80 + "_create", "x" * 80 + "_delete"
    assert exposed_name("gh", first) == exposed_name("gh", first)
    assert exposed_name("gh", first) != exposed_name("gh", second)
    assert exposed_name("gh", first)[:55] == exposed_name("gh", second)[:55]


def test_a_cut_name_hashes_the_name_as_given_not_as_made_safe() -> None:
    """Two names that differ only in unsafe characters still get different exposed names once cut."""
    assert exposed_name("gh", "a.b" + "c" * 70) != exposed_name("gh", "a/b" + "c" * 70)


# ---------------------------------------------------------------------------
# Catalog: build, the way back, storage
# ---------------------------------------------------------------------------
def test_a_catalog_offers_tools_and_prompts_under_exposed_names() -> None:
    built = catalog("gh", tools=["get.file", "search"], prompts=["summarize"])
    assert list(built.tools) == ["gh__get_file", "gh__search"]
    assert built.tools["gh__get_file"].name == "gh__get_file"
    assert built.tools["gh__get_file"].description == "The get.file tool"
    assert list(built.prompts) == ["gh__summarize"]
    assert built.prompts["gh__summarize"].name == "gh__summarize"


def test_a_catalog_knows_the_upstreams_own_name_of_each_exposed_one() -> None:
    built = catalog("gh", tools=["get.file", "x" * 90], prompts=["summarize"])
    assert built.original_tool("gh__get_file") == "get.file"
    assert built.original_tool(exposed_name("gh", "x" * 90)) == "x" * 90
    assert built.original_prompt("gh__summarize") == "summarize"
    with pytest.raises(KeyError):
        built.original_tool("gh__summarize")


def test_a_tool_and_a_prompt_of_the_same_name_do_not_mix_up_their_way_back() -> None:
    built = catalog("gh", tools=["a.b"], prompts=["a/b"])
    assert built.original_tool("gh__a_b") == "a.b"
    assert built.original_prompt("gh__a_b") == "a/b"


def test_a_stored_catalog_keeps_the_upstreams_own_names_and_rebuilds_the_same() -> None:
    built = catalog(
        "gh",
        tools=["get.file", "search"],
        prompts=["summarize"],
        resources=["demo://resource/static/1"],
        templates=[EVERYTHING_TEMPLATE],
    )
    stored = json.loads(json.dumps(built.to_json()))
    assert [t["name"] for t in stored["tools"]] == ["get.file", "search"]
    assert [p["name"] for p in stored["prompts"]] == ["summarize"]
    assert stored["tools"][0]["inputSchema"] == SCHEMA
    assert [r["uri"] for r in stored["resources"]] == ["demo://resource/static/1"]
    assert [t["uriTemplate"] for t in stored["resource_templates"]] == [EVERYTHING_TEMPLATE]
    assert Catalog.from_json(stored, prefix="gh") == built


def test_a_stored_catalog_read_under_a_new_prefix_exposes_the_new_names() -> None:
    stored = catalog("gh", tools=["get.file"], prompts=["summarize"]).to_json()
    rebuilt = Catalog.from_json(stored, prefix="")
    assert list(rebuilt.tools) == ["get_file"]
    assert list(rebuilt.prompts) == ["summarize"]
    assert rebuilt.original_tool("get_file") == "get.file"


def test_an_empty_stored_catalog_is_an_empty_catalog() -> None:
    assert Catalog.from_json({}, prefix="gh") == Catalog(prefix="gh")


# ---------------------------------------------------------------------------
# Resources: listed URIs, templates, schemes
# ---------------------------------------------------------------------------
def test_a_template_matches_uris_that_fill_its_variable() -> None:
    built = catalog("", templates=[EVERYTHING_TEMPLATE])
    assert built.matches_template("demo://resource/dynamic/text/7")
    assert built.matches_template("demo://resource/dynamic/text/some-id")


@pytest.mark.parametrize(
    "uri",
    [
        "demo://resource/dynamic/blob/7",
        "demo://resource/dynamic/text/",
        "other://resource/dynamic/text/7",
        "xdemo://resource/dynamic/text/7",
    ],
)
def test_a_template_does_not_match_other_uris(uri: str) -> None:
    assert not catalog("", templates=[EVERYTHING_TEMPLATE]).matches_template(uri)


def test_a_templates_literal_text_is_matched_literally() -> None:
    pattern = template_pattern("repo://a+b/{path}.md")
    assert pattern.match("repo://a+b/readme.md")
    assert not pattern.match("repo://aab/readme.md")
    assert not pattern.match("repo://a+b/readme_md")


def test_the_schemes_are_those_of_the_resources_and_templates_in_lower_case() -> None:
    built = catalog("", resources=["Demo://a/1", "file:///tmp/x"], templates=["notes://{id}"])
    assert built.schemes == frozenset({"demo", "file", "notes"})
    assert built.uris == frozenset({"Demo://a/1", "file:///tmp/x"})


def test_a_uri_without_a_colon_has_no_scheme() -> None:
    assert scheme_of("relative/path") == ""
    assert scheme_of("HTTPS://example.com") == "https"


# ---------------------------------------------------------------------------
# Routes: collisions between upstreams and with local tools
# ---------------------------------------------------------------------------
@pytest.fixture
async def pool() -> AsyncIterator[SharedPool]:
    shared = SharedPool()
    try:
        yield shared
    finally:
        await shared.close()


@pytest.fixture
def make_link(pool: SharedPool) -> Callable[..., Link]:
    """A Link (not running) with the catalog given, as the hub holds one."""
    ids = iter(range(1, 1000))

    def make(name: str, built: Catalog | None, *, groups: Iterable[str] = ()) -> Link:
        config = UpstreamConfig(
            id=next(ids),
            name=name,
            prefix=built.prefix if built is not None else name,
            transport=Transport.STREAMABLE_HTTP,
            url=f"http://127.0.0.1:9/{name}/mcp",
            command=(),
            groups=frozenset(groups),
            scopes=frozenset(),
            timeout=5.0,
            updated_at=timezone.now(),
        )
        link = Link(config, pool=pool, stored=None, on_catalog=lambda: None)
        link.catalog = built
        return link

    return make


LOCAL = frozenset({"whoami", "add_note", "list_notes"})


@pytest.mark.anyio
async def test_an_upstream_tool_named_like_a_local_tool_is_left_out_and_noted(make_link: Callable[..., Link]) -> None:
    alpha = make_link("alpha", catalog("", tools=["whoami", "echo"]))
    routes = Routes.merge([alpha], LOCAL)
    assert list(routes.tools) == ["echo"]
    assert alpha.hidden == ("whoami",)


@pytest.mark.anyio
async def test_of_two_upstreams_exposing_one_name_the_first_by_name_wins(make_link: Callable[..., Link]) -> None:
    beta = make_link("beta", catalog("", tools=["search", "beta_only"], prompts=["summarize"]))
    alpha = make_link("alpha", catalog("", tools=["search"], prompts=["summarize"]))
    routes = Routes.merge([beta, alpha], LOCAL)
    assert routes.tools["search"].link is alpha
    assert routes.tools["beta_only"].link is beta
    assert routes.prompts["summarize"].link is alpha
    assert alpha.hidden == ()
    assert beta.hidden == ("search", "prompt summarize")
    assert [link.config.name for link in routes.links] == ["alpha", "beta"]


@pytest.mark.anyio
async def test_a_route_carries_the_tool_as_clients_see_it(make_link: Callable[..., Link]) -> None:
    gh = make_link("github", catalog("gh", tools=["get.file"]))
    route = Routes.merge([gh], LOCAL).tools["gh__get_file"]
    assert route.item.name == "gh__get_file"
    assert route.link.catalog is not None and route.link.catalog.original_tool("gh__get_file") == "get.file"


@pytest.mark.anyio
async def test_an_upstream_not_listed_yet_offers_nothing_and_hides_nothing(make_link: Callable[..., Link]) -> None:
    pending = make_link("pending", None)
    pending.hidden = ("stale",)
    routes = Routes.merge([pending], LOCAL)
    assert (routes.tools, routes.prompts, pending.hidden) == ({}, {}, ())


@pytest.mark.anyio
async def test_a_hidden_name_comes_back_when_the_upstream_holding_it_leaves(make_link: Callable[..., Link]) -> None:
    alpha = make_link("alpha", catalog("", tools=["search"]))
    beta = make_link("beta", catalog("", tools=["search"]))
    Routes.merge([alpha, beta], LOCAL)
    assert beta.hidden == ("search",)
    routes = Routes.merge([beta], LOCAL)
    assert routes.tools["search"].link is beta and beta.hidden == ()


# ---------------------------------------------------------------------------
# Routes: where a resource read goes
# ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_listed_uri_goes_to_the_upstream_that_listed_it_before_any_template(
    make_link: Callable[..., Link],
) -> None:
    alpha = make_link("alpha", catalog("a", templates=["demo://a/{id}"]))
    beta = make_link("beta", catalog("b", resources=["demo://a/1"]))
    routes = Routes.merge([alpha, beta], LOCAL)
    assert routes.resource_link("demo://a/1", frozenset()) is beta
    assert routes.resource_link("demo://a/2", frozenset()) is alpha


@pytest.mark.anyio
async def test_a_uri_matching_a_template_goes_to_its_upstream(make_link: Callable[..., Link]) -> None:
    everything = make_link("everything", catalog("ev", templates=[EVERYTHING_TEMPLATE]))
    other = make_link("other", catalog("ot", resources=["demo://resource/static/1"]))
    routes = Routes.merge([everything, other], LOCAL)
    assert routes.resource_link("demo://resource/dynamic/text/7", frozenset()) is everything


@pytest.mark.anyio
async def test_a_uri_of_a_scheme_only_one_upstream_uses_goes_there(make_link: Callable[..., Link]) -> None:
    files = make_link("files", catalog("f", resources=["file:///srv/readme.md"]))
    demo = make_link("demo", catalog("d", resources=["demo://a/1"]))
    routes = Routes.merge([files, demo], LOCAL)
    assert routes.resource_link("FILE:///srv/other.md", frozenset()) is files


@pytest.mark.anyio
async def test_a_uri_of_a_scheme_several_upstreams_use_goes_nowhere(make_link: Callable[..., Link]) -> None:
    one = make_link("one", catalog("o", resources=["demo://one/1"]))
    two = make_link("two", catalog("t", templates=["demo://two/{id}"]))
    routes = Routes.merge([one, two], LOCAL)
    assert routes.resource_link("demo://three/1", frozenset()) is None
    assert routes.resource_link("unknown://x", frozenset()) is None


@pytest.mark.anyio
async def test_an_upstream_outside_the_persons_groups_gets_no_read(make_link: Callable[..., Link]) -> None:
    secret = make_link("secret", catalog("s", resources=["vault://a/1"], templates=["vault://b/{id}"]), groups=["ops"])
    routes = Routes.merge([secret], LOCAL)
    for uri in ("vault://a/1", "vault://b/2", "vault://c"):
        assert routes.resource_link(uri, frozenset({"eng"})) is None
        assert routes.resource_link(uri, frozenset({"eng", "ops"})) is secret


@pytest.mark.anyio
async def test_an_upstream_outside_the_persons_groups_does_not_make_a_scheme_ambiguous(
    make_link: Callable[..., Link],
) -> None:
    public = make_link("public", catalog("p", resources=["demo://public/1"]))
    limited = make_link("limited", catalog("l", resources=["demo://limited/1"]), groups=["ops"])
    routes = Routes.merge([public, limited], LOCAL)
    assert routes.resource_link("demo://elsewhere/1", frozenset()) is public
    assert routes.resource_link("demo://elsewhere/1", frozenset({"ops"})) is None
