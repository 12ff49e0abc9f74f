"""Every provider kind chatd can call, one entry each. The API's allowed values, the deployment
keys read from the settings, model building, native tools, the quick model and model discovery
all come from here: adding a kind is an entry here (a new SDK also a wire in `wire.py`), plus
the deployment key's setting in settings.py and its row in docs/configuration.md."""

from __future__ import annotations

from dataclasses import dataclass

from chatd.errors import InvalidInput
from chatd.providers.wire import ANTHROPIC, GOOGLE, OPENAI_CHAT, Wire
from chatd.settings import Settings


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    kind: str
    # For people: "The {label} provider needs …".
    label: str
    wire: Wire
    # The Settings field holding the deployment's key (CHATD_<FIELD>); None: the kind takes none.
    key_setting: str | None
    # Calls cannot work without a key / without a base URL (a self-hosted server has no default).
    needs_key: bool
    needs_base_url: bool = False
    example_base_url: str | None = None
    # The cheap model for titles and push summaries; None = the chat's own model.
    quick_model: str | None = None
    # Provider-native web search (pydantic-ai `WebSearchTool`): OpenAI's chat completions API has
    # none (only its Responses API does).
    web_search: bool = False
    # The OpenTelemetry GenAI `gen_ai.provider.name` of its calls; None = the kind.
    otel_name: str | None = None

    @property
    def key_name(self) -> str:
        """The deployment key's name as the operator reads it in an error ("ANTHROPIC_API_KEY")."""
        return (self.key_setting or f"{self.kind}_api_key").upper()


PROVIDERS: dict[str, ProviderSpec] = {
    s.kind: s
    for s in (
        ProviderSpec(
            "anthropic", "Anthropic", ANTHROPIC, "anthropic_api_key", needs_key=True,
            quick_model="claude-haiku-4-5", web_search=True,
        ),
        ProviderSpec("openai", "OpenAI", OPENAI_CHAT, "openai_api_key", needs_key=True, quick_model="gpt-4o-mini"),
        ProviderSpec(
            "openai-compatible", "OpenAI-compatible", OPENAI_CHAT, None, needs_key=False,
            needs_base_url=True, example_base_url="http://localhost:11434/v1", otel_name="openai",
        ),
        ProviderSpec(
            "google", "Google", GOOGLE, "google_api_key", needs_key=True,
            quick_model="gemini-2.5-flash", web_search=True, otel_name="gcp.gemini",
        ),
    )
}
KINDS: tuple[str, ...] = tuple(PROVIDERS)
WIRES: tuple[Wire, ...] = tuple({s.wire.name: s.wire for s in PROVIDERS.values()}.values())


class UnknownProvider(InvalidInput):
    def __init__(self, kind: str) -> None:
        super().__init__(f"Unknown provider {kind!r}; expected one of {', '.join(KINDS)}.")
        self.kind = kind


def provider_spec(kind: str) -> ProviderSpec:
    """The entry of `kind`; raises UnknownProvider (a 400) for any other value."""
    spec = PROVIDERS.get(kind)
    if spec is None:
        raise UnknownProvider(kind)
    return spec


def deployment_keys(settings: Settings) -> dict[str, str]:
    """The deployment's provider keys by kind (CHATD_<KIND>_API_KEY); a stored key wins over them."""
    keys: dict[str, str] = {}
    for spec in PROVIDERS.values():
        if spec.key_setting is not None:
            value = getattr(settings, spec.key_setting)
            if not isinstance(value, str):
                raise TypeError(f"Settings.{spec.key_setting} is not a key")
            if value:
                keys[spec.kind] = value
    return keys
